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

absl::StatusOr<PlacementPlan> PlacementPlan::Create(PlacementPolicy policy, int32_t n_layers,
                                                    int32_t n_kv_heads, int64_t block_bytes,
                                                    std::vector<int64_t> pool_bytes) {
  if (pool_bytes.empty() || n_layers < 1 || n_kv_heads < 1 || block_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("invalid placement: ", pool_bytes.size(),
                                                   " ranks, ", n_layers, " layers, ", n_kv_heads,
                                                   " kv heads, ", block_bytes, "-byte blocks"));
  }
  for (size_t r = 0; r < pool_bytes.size(); ++r) {
    if (pool_bytes[r] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", r, " has a negative pool budget"));
    }
  }
  PlacementPlan plan;
  plan.policy_ = policy;
  plan.n_layers_ = n_layers;
  plan.n_kv_heads_ = n_kv_heads;
  plan.block_bytes_ = block_bytes;
  plan.used_bytes_.assign(pool_bytes.size(), 0);
  plan.peak_bytes_.assign(pool_bytes.size(), 0);
  plan.free_slots_.resize(pool_bytes.size());
  plan.next_slot_.assign(pool_bytes.size(), 0);
  plan.pool_bytes_ = std::move(pool_bytes);
  return plan;
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
    if (used_bytes_[rank] + block_bytes_ > pool_bytes_[rank]) continue;
    used_bytes_[rank] += block_bytes_;
    peak_bytes_[rank] = std::max(peak_bytes_[rank], used_bytes_[rank]);
    int64_t slot = next_slot_[rank];
    if (std::vector<int64_t>& free = free_slots_[rank]; !free.empty()) {
      // Lowest released slot first (free is a min-heap).
      std::pop_heap(free.begin(), free.end(), std::greater<>());
      slot = free.back();
      free.pop_back();
    } else {
      ++next_slot_[rank];
    }
    homes_.emplace(key, Home{rank, slot});
    if (step > 0) ++spilled_blocks_;
    return rank;
  }
  std::string pools;
  for (int32_t r = 0; r < world_size(); ++r) {
    absl::StrAppend(&pools, r == 0 ? "" : ", ", "rank ", r, " ", Bytes(used_bytes_[r]), " of ",
                    Bytes(pool_bytes_[r]));
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("cluster KV pools are full: a ", Bytes(block_bytes_), " block (layer ", layer,
                   ", kv head ", kv_head, ", block ", block, ") fits on no rank (", pools,
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
  const Home home = it->second;
  used_bytes_[home.rank] -= block_bytes_;
  std::vector<int64_t>& free = free_slots_[home.rank];
  free.push_back(home.slot);
  std::push_heap(free.begin(), free.end(), std::greater<>());
  homes_.erase(it);
}

}  // namespace headwise::cluster
