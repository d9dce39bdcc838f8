// Placement policies and spill; see placement.h.
#include "cluster/placement.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace headwise::cluster {
namespace {

std::string Bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / double(1 << 30));
  if (bytes >= (int64_t{1} << 20)) return absl::StrFormat("%.2f MiB", bytes / double(1 << 20));
  return absl::StrCat(bytes, " bytes");
}

}  // namespace

std::optional<PlacementPolicy> ParsePlacement(std::string_view name) {
  if (name == "head-major") return PlacementPolicy::kHeadMajor;
  if (name == "striped") return PlacementPolicy::kStriped;
  return std::nullopt;
}

const char* PlacementName(PlacementPolicy policy) {
  return policy == PlacementPolicy::kHeadMajor ? "head-major" : "striped";
}

const char* PoolTierName(PoolTier tier) { return tier == PoolTier::kHost ? "host" : "disk"; }

absl::StatusOr<std::shared_ptr<PoolLedger>> PoolLedger::Create(int64_t block_bytes,
                                                               std::vector<int64_t> host_bytes,
                                                               std::vector<int64_t> disk_bytes) {
  if (host_bytes.empty() || block_bytes < 1 ||
      (!disk_bytes.empty() && disk_bytes.size() != host_bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("invalid pools: ", host_bytes.size(), " ranks (",
                                                   disk_bytes.size(), " disk tiers), ", block_bytes,
                                                   "-byte blocks"));
  }
  if (disk_bytes.empty()) disk_bytes.assign(host_bytes.size(), 0);
  std::shared_ptr<PoolLedger> ledger(new PoolLedger());
  ledger->block_bytes_ = block_bytes;
  for (int tier = 0; tier < 2; ++tier) {
    const std::vector<int64_t>& budgets = tier == 0 ? host_bytes : disk_bytes;
    for (size_t r = 0; r < budgets.size(); ++r) {
      if (budgets[r] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", r, " has a negative ", PoolTierName(PoolTier(tier)), " pool budget"));
      }
      Pool pool;
      pool.budget = budgets[r];
      ledger->pools_[tier].push_back(std::move(pool));
    }
  }
  return ledger;
}

int64_t PoolLedger::Acquire(int32_t rank, PoolTier tier) {
  std::lock_guard lock(mu_);
  Pool& pool = pools_[int(tier)][rank];
  if (pool.used + block_bytes_ > pool.budget) return -1;
  pool.used += block_bytes_;
  pool.peak = std::max(pool.peak, pool.used);
  if (pool.free.empty()) return pool.next_slot++;
  std::pop_heap(pool.free.begin(), pool.free.end(), std::greater<>());
  const int64_t slot = pool.free.back();
  pool.free.pop_back();
  return slot;
}

void PoolLedger::Release(int32_t rank, PoolTier tier, int64_t slot) {
  std::lock_guard lock(mu_);
  Pool& pool = pools_[int(tier)][rank];
  pool.used -= block_bytes_;
  pool.free.push_back(slot);
  std::push_heap(pool.free.begin(), pool.free.end(), std::greater<>());
}

int64_t PoolLedger::used_bytes(int32_t rank, PoolTier tier) const {
  std::lock_guard lock(mu_);
  return pools_[int(tier)][rank].used;
}

int64_t PoolLedger::peak_bytes(int32_t rank, PoolTier tier) const {
  std::lock_guard lock(mu_);
  return pools_[int(tier)][rank].peak;
}

int64_t PoolLedger::pool_bytes(int32_t rank, PoolTier tier) const {
  std::lock_guard lock(mu_);
  return pools_[int(tier)][rank].budget;
}

absl::StatusOr<PlacementPlan> PlacementPlan::Create(PlacementPolicy policy, int32_t n_layers,
                                                    int32_t n_kv_heads, int64_t block_bytes,
                                                    std::vector<int64_t> pool_bytes) {
  absl::StatusOr<std::shared_ptr<PoolLedger>> ledger =
      PoolLedger::Create(block_bytes, std::move(pool_bytes));
  if (!ledger.ok()) return ledger.status();
  return Create(policy, n_layers, n_kv_heads, std::move(*ledger));
}

absl::StatusOr<PlacementPlan> PlacementPlan::Create(PlacementPolicy policy, int32_t n_layers,
                                                    int32_t n_kv_heads,
                                                    std::shared_ptr<PoolLedger> ledger) {
  if (ledger == nullptr || n_layers < 1 || n_kv_heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("invalid placement: ", n_layers, " layers, ",
                                                   n_kv_heads, " kv heads",
                                                   ledger == nullptr ? ", no pools" : ""));
  }
  PlacementPlan plan;
  plan.policy_ = policy;
  plan.n_layers_ = n_layers;
  plan.n_kv_heads_ = n_kv_heads;
  plan.ledger_ = std::move(ledger);
  return plan;
}

PlacementPlan::~PlacementPlan() {
  if (ledger_ == nullptr) return;  // moved from
  for (const auto& [key, home] : homes_) ledger_->Release(home.rank, home.tier, home.slot);
}

int32_t PlacementPlan::PreferredRank(int32_t layer, int32_t kv_head, int32_t block) const {
  const int64_t world = world_size();
  if (policy_ == PlacementPolicy::kStriped) {
    // Offset by head so one block index does not land every head on one rank.
    return static_cast<int32_t>((int64_t(block) + kv_head) % world);
  }
  // Head-major: (layer, head) pairs dealt across ranks, so every rank owns
  // whole heads even when a model has fewer kv heads than ranks.
  return static_cast<int32_t>((int64_t(layer) * n_kv_heads_ + kv_head) % world);
}

uint64_t PlacementPlan::Key(int32_t layer, int32_t kv_head, int32_t block) const {
  return (uint64_t(uint32_t(block)) * uint64_t(n_layers_) + uint64_t(layer)) *
             uint64_t(n_kv_heads_) +
         uint64_t(kv_head);
}

std::optional<uint64_t> PlacementPlan::ColdestHostBlock(int32_t rank) {
  std::deque<uint64_t>& order = host_order_[rank];
  while (!order.empty()) {
    const uint64_t key = order.front();
    order.pop_front();
    auto it = homes_.find(key);
    if (it != homes_.end() && it->second.rank == rank && it->second.tier == PoolTier::kHost) {
      return key;
    }
  }
  return std::nullopt;
}

absl::StatusOr<BlockHome> PlacementPlan::Place(int32_t layer, int32_t kv_head, int32_t block) {
  if (layer < 0 || layer >= n_layers_ || kv_head < 0 || kv_head >= n_kv_heads_ || block < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no block (layer ", layer, ", kv head ", kv_head, ", block ", block, ")"));
  }
  const uint64_t key = Key(layer, kv_head, block);
  if (auto it = homes_.find(key); it != homes_.end()) return it->second;
  if (host_order_.empty()) host_order_.resize(world_size());
  const int32_t preferred = PreferredRank(layer, kv_head, block);
  for (int32_t step = 0; step < world_size(); ++step) {
    const int32_t rank = (preferred + step) % world_size();
    BlockHome home{rank, PoolTier::kHost, ledger_->Acquire(rank, PoolTier::kHost)};
    if (home.slot < 0) {
      // Host full: the rank's disk takes the coldest block there, or this one.
      const int64_t disk_slot = ledger_->Acquire(rank, PoolTier::kDisk);
      if (disk_slot < 0) continue;
      if (std::optional<uint64_t> coldest = ColdestHostBlock(rank)) {
        BlockHome& moved = homes_[*coldest];
        const uint64_t per_block = uint64_t(n_layers_) * uint64_t(n_kv_heads_);
        demotions_.push_back({static_cast<int32_t>(*coldest % per_block / n_kv_heads_),
                              static_cast<int32_t>(*coldest % n_kv_heads_),
                              static_cast<int32_t>(*coldest / per_block), rank, moved.slot,
                              disk_slot});
        home.slot = moved.slot;
        moved = {rank, PoolTier::kDisk, disk_slot};
        ++demoted_blocks_;
      } else {
        home = {rank, PoolTier::kDisk, disk_slot};
      }
    }
    if (home.tier == PoolTier::kHost) host_order_[rank].push_back(key);
    homes_.emplace(key, home);
    if (step > 0) ++spilled_blocks_;
    return home;
  }
  std::string pools;
  for (int32_t r = 0; r < world_size(); ++r) {
    absl::StrAppend(&pools, r == 0 ? "" : ", ", "rank ", r, " ", Bytes(used_bytes(r)), " of ",
                    Bytes(pool_bytes(r)));
    if (pool_bytes(r, PoolTier::kDisk) > 0) {
      absl::StrAppend(&pools, " host + ", Bytes(used_bytes(r, PoolTier::kDisk)), " of ",
                      Bytes(pool_bytes(r, PoolTier::kDisk)), " disk");
    }
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("cluster KV pools are full: a ", Bytes(ledger_->block_bytes()), " block (layer ",
                   layer, ", kv head ", kv_head, ", block ", block, ") fits on no rank (", pools,
                   "); add ranks or raise --host-mem / --disk-mem"));
}

absl::StatusOr<BlockHome> PlacementPlan::PlaceOn(int32_t layer, int32_t kv_head, int32_t block,
                                                 int32_t rank) {
  if (layer < 0 || layer >= n_layers_ || kv_head < 0 || kv_head >= n_kv_heads_ || block < 0 ||
      rank < 0 || rank >= world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("no block (layer ", layer, ", kv head ", kv_head,
                                                   ", block ", block, ") on rank ", rank));
  }
  const uint64_t key = Key(layer, kv_head, block);
  if (auto it = homes_.find(key); it != homes_.end()) return it->second;
  if (host_order_.empty()) host_order_.resize(world_size());
  for (PoolTier tier : {PoolTier::kHost, PoolTier::kDisk}) {
    const int64_t slot = ledger_->Acquire(rank, tier);
    if (slot < 0) continue;
    if (tier == PoolTier::kHost) host_order_[rank].push_back(key);
    return homes_[key] = BlockHome{rank, tier, slot};
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "rank ", rank, " has no room for block (layer ", layer, ", kv head ", kv_head, ", block ",
      block, "): host ", Bytes(used_bytes(rank)), " of ", Bytes(pool_bytes(rank)), ", disk ",
      Bytes(used_bytes(rank, PoolTier::kDisk)), " of ", Bytes(pool_bytes(rank, PoolTier::kDisk))));
}

std::vector<Demotion> PlacementPlan::TakeDemotions() { return std::exchange(demotions_, {}); }

std::optional<BlockHome> PlacementPlan::HomeOf(int32_t layer, int32_t kv_head,
                                               int32_t block) const {
  if (auto it = homes_.find(Key(layer, kv_head, block)); it != homes_.end()) return it->second;
  return std::nullopt;
}

void PlacementPlan::Release(int32_t layer, int32_t kv_head, int32_t block) {
  auto it = homes_.find(Key(layer, kv_head, block));
  if (it == homes_.end()) return;
  ledger_->Release(it->second.rank, it->second.tier, it->second.slot);
  homes_.erase(it);
}

}  // namespace headwise::cluster
