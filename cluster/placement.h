// Where each sealed KV block lives in a launched world: the map
// (layer, kv head, block) -> rank (DESIGN.md "placement"). `head-major` shards
// kv heads across ranks (a rank owns whole heads, so delegate-mode partials
// need no cross-rank merge per head); `striped` deals blocks round-robin
// across ranks (for contexts larger than one rank's pool). A block goes to its
// preferred rank's host pool, or spills to the next rank with room; when every
// pool is full, placing fails with RESOURCE_EXHAUSTED and the numbers.
// Placement is decided on the coordinator as blocks are sealed. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace headwise::cluster {

enum class PlacementPolicy { kHeadMajor, kStriped };

// The block slots of every rank's pool, shared by every placement plan (one
// per sequence) that places blocks of one size in the same pools: a slot is
// `block_bytes` at slot * block_bytes. Thread-safe.
class PoolLedger {
 public:
  // InvalidArgument for an empty world, block_bytes < 1 or a negative pool.
  static absl::StatusOr<std::shared_ptr<PoolLedger>> Create(int64_t block_bytes,
                                                            std::vector<int64_t> pool_bytes);

  int32_t world_size() const { return static_cast<int32_t>(pool_bytes_.size()); }
  int64_t block_bytes() const { return block_bytes_; }
  // A free slot of `rank`'s pool (lowest released first), or -1 when full.
  int64_t Acquire(int32_t rank);
  void Release(int32_t rank, int64_t slot);

  int64_t used_bytes(int32_t rank) const;
  int64_t peak_bytes(int32_t rank) const;
  int64_t pool_bytes(int32_t rank) const { return pool_bytes_[rank]; }

 private:
  PoolLedger() = default;
  mutable std::mutex mu_;
  int64_t block_bytes_ = 0;
  std::vector<int64_t> pool_bytes_;
  std::vector<int64_t> used_bytes_;
  std::vector<int64_t> peak_bytes_;
  std::vector<std::vector<int64_t>> free_slots_;  // per rank, a min-heap of released slots
  std::vector<int64_t> next_slot_;                // per rank, never used yet
};

std::optional<PlacementPolicy> ParsePlacement(std::string_view name);  // "head-major", "striped"
const char* PlacementName(PlacementPolicy policy);

class PlacementPlan {
 public:
  // `pool_bytes[r]` is rank r's host pool budget; `block_bytes` one block of
  // one (layer, kv head). InvalidArgument for an empty world, non-positive
  // sizes or counts.
  static absl::StatusOr<PlacementPlan> Create(PlacementPolicy policy, int32_t n_layers,
                                              int32_t n_kv_heads, int64_t block_bytes,
                                              std::vector<int64_t> pool_bytes);
  // The same over a ledger shared with other plans.
  static absl::StatusOr<PlacementPlan> Create(PlacementPolicy policy, int32_t n_layers,
                                              int32_t n_kv_heads,
                                              std::shared_ptr<PoolLedger> ledger);
  PlacementPlan(PlacementPlan&&) = default;
  PlacementPlan& operator=(PlacementPlan&&) = default;
  // Releases every block still placed.
  ~PlacementPlan();

  PlacementPolicy policy() const { return policy_; }
  int32_t world_size() const { return ledger_->world_size(); }

  // The rank the policy prefers for a block, ignoring pool room.
  int32_t PreferredRank(int32_t layer, int32_t kv_head, int32_t block) const;

  // Assigns (layer, kv head, block) a home, charging its bytes to that rank's
  // pool: the preferred rank, else the next rank (in rank order, wrapping)
  // with room. Placing an already placed block returns its home.
  absl::StatusOr<int32_t> Place(int32_t layer, int32_t kv_head, int32_t block);
  // The home of a placed block; nullopt when it was never placed.
  std::optional<int32_t> HomeOf(int32_t layer, int32_t kv_head, int32_t block) const;
  // The slot of a placed block in its home rank's pool (the block lies at
  // slot * block_bytes); -1 when it was never placed. Slots are reused after
  // Release, lowest first.
  int64_t SlotOf(int32_t layer, int32_t kv_head, int32_t block) const;
  // Frees a placed block's bytes (truncation, session close).
  void Release(int32_t layer, int32_t kv_head, int32_t block);

  // The shared pools' figures (every plan on the ledger).
  int64_t used_bytes(int32_t rank) const { return ledger_->used_bytes(rank); }
  int64_t peak_bytes(int32_t rank) const { return ledger_->peak_bytes(rank); }
  int64_t pool_bytes(int32_t rank) const { return ledger_->pool_bytes(rank); }
  const std::shared_ptr<PoolLedger>& ledger() const { return ledger_; }
  int64_t spilled_blocks() const { return spilled_blocks_; }

 private:
  PlacementPlan() = default;
  uint64_t Key(int32_t layer, int32_t kv_head, int32_t block) const;

  PlacementPolicy policy_ = PlacementPolicy::kHeadMajor;
  int32_t n_layers_ = 0;
  int32_t n_kv_heads_ = 0;
  struct Home {
    int32_t rank;
    int64_t slot;
  };
  std::shared_ptr<PoolLedger> ledger_;
  std::unordered_map<uint64_t, Home> homes_;
  int64_t spilled_blocks_ = 0;
};

}  // namespace headwise::cluster
