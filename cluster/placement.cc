// Placement policies and spill; see placement.h.
#include "cluster/placement.h"

#include <algorithm>
#include <functional>

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

absl::StatusOr<std::shared_ptr<PoolLedger>> PoolLedger::Create(int64_t block_bytes,
                                                               std::vector<int64_t> pool_bytes) {
  if (pool_bytes.empty() || block_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("invalid pools: ", pool_bytes.size(), " ranks, ",
                                                   block_bytes, "-byte blocks"));
  }
  for (size_t r = 0; r < pool_bytes.size(); ++r) {
    if (pool_bytes[r] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", r, " has a negative pool budget"));
    }
  }
  std::shared_ptr<PoolLedger> ledger(new PoolLedger());
  ledger->block_bytes_ = block_bytes;
  ledger->used_bytes_.assign(pool_bytes.size(), 0);
  ledger->peak_bytes_.assign(pool_bytes.size(), 0);
  ledger->free_slots_.resize(pool_bytes.size());
  ledger->next_slot_.assign(pool_bytes.size(), 0);
  ledger->pool_bytes_ = std::move(pool_bytes);
  return ledger;
}

int64_t PoolLedger::Acquire(int32_t rank) {
  std::lock_guard lock(mu_);
  if (used_bytes_[rank] + block_bytes_ > pool_bytes_[rank]) return -1;
  used_bytes_[rank] += block_bytes_;
  peak_bytes_[rank] = std::max(peak_bytes_[rank], used_bytes_[rank]);
  std::vector<int64_t>& free = free_slots_[rank];
  if (free.empty()) return next_slot_[rank]++;
  std::pop_heap(free.begin(), free.end(), std::greater<>());
  const int64_t slot = free.back();
  free.pop_back();
  return slot;
}

void PoolLedger::Release(int32_t rank, int64_t slot) {
  std::lock_guard lock(mu_);
  used_bytes_[rank] -= block_bytes_;
  std::vector<int64_t>& free = free_slots_[rank];
  free.push_back(slot);
  std::push_heap(free.begin(), free.end(), std::greater<>());
}

int64_t PoolLedger::used_bytes(int32_t rank) const {
  std::lock_guard lock(mu_);
  return used_bytes_[rank];
}

int64_t PoolLedger::peak_bytes(int32_t rank) const {
  std::lock_guard lock(mu_);
  return peak_bytes_[rank];
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
  for (const auto& [key, home] : homes_) ledger_->Release(home.rank, home.slot);
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

absl::StatusOr<int32_t> PlacementPlan::Place(int32_t layer, int32_t kv_head, int32_t block) {
  if (layer < 0 || layer >= n_layers_ || kv_head < 0 || kv_head >= n_kv_heads_ || block < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no block (layer ", layer, ", kv head ", kv_head, ", block ", block, ")"));
  }
  const uint64_t key = Key(layer, kv_head, block);
  if (auto it = homes_.find(key); it != homes_.end()) return it->second.rank;
  const int32_t preferred = PreferredRank(layer, kv_head, block);
  for (int32_t step = 0; step < world_size(); ++step) {
    const int32_t rank = (preferred + step) % world_size();
    const int64_t slot = ledger_->Acquire(rank);
    if (slot < 0) continue;
    homes_.emplace(key, Home{rank, slot});
    if (step > 0) ++spilled_blocks_;
    return rank;
  }
  std::string pools;
  for (int32_t r = 0; r < world_size(); ++r) {
    absl::StrAppend(&pools, r == 0 ? "" : ", ", "rank ", r, " ", Bytes(used_bytes(r)), " of ",
                    Bytes(pool_bytes(r)));
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("cluster KV pools are full: a ", Bytes(ledger_->block_bytes()), " block (layer ",
                   layer, ", kv head ", kv_head, ", block ", block, ") fits on no rank (", pools,
                   "); add ranks or raise --host-mem"));
}

std::optional<int32_t> PlacementPlan::HomeOf(int32_t layer, int32_t kv_head, int32_t block) const {
  if (auto it = homes_.find(Key(layer, kv_head, block)); it != homes_.end()) {
    return it->second.rank;
  }
  return std::nullopt;
}

int64_t PlacementPlan::SlotOf(int32_t layer, int32_t kv_head, int32_t block) const {
  auto it = homes_.find(Key(layer, kv_head, block));
  return it == homes_.end() ? -1 : it->second.slot;
}

void PlacementPlan::Release(int32_t layer, int32_t kv_head, int32_t block) {
  auto it = homes_.find(Key(layer, kv_head, block));
  if (it == homes_.end()) return;
  ledger_->Release(it->second.rank, it->second.slot);
  homes_.erase(it);
}

}  // namespace headwise::cluster
