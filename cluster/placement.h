// Where each sealed KV block lives in a launched world: the map
// (layer, kv head, block) -> rank (DESIGN.md "placement"). `head-major` shards
// kv heads across ranks (a rank owns whole heads, so delegate-mode partials
// need no cross-rank merge per head); `striped` deals blocks round-robin
// across ranks (for contexts larger than one rank's pool). A block goes to its
// preferred rank's host pool; when that pool is full and the rank has a disk
// tier, the plan's coldest block there (the one placed first) moves to the
// rank's disk to make room (or, with none to move, the new block goes to
// disk); only then does it spill to the next rank with room. When every pool
// is full, placing fails with RESOURCE_EXHAUSTED and the numbers.
// Placement is decided on the coordinator as blocks are sealed. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
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

// The pools of a rank: host RAM (registered with the transport) and the
// local disk tier.
enum class PoolTier : uint8_t { kHost = 0, kDisk = 1 };
const char* PoolTierName(PoolTier tier);  // "host", "disk"

// Where a placed block lives: its rank, the pool there and the slot in it
// (the block lies at slot * block_bytes of that pool).
struct BlockHome {
  int32_t rank = -1;
  PoolTier tier = PoolTier::kHost;
  int64_t slot = -1;
  bool operator==(const BlockHome&) const = default;
};

// A block moved by Place from its rank's host pool to that rank's disk to
// make room: whoever holds the block's bytes writes them from the host slot
// to the disk slot before anything else is written to the host slot.
struct Demotion {
  int32_t layer = 0, kv_head = 0, block = 0;
  int32_t rank = 0;
  int64_t host_slot = -1, disk_slot = -1;
};

// The block slots of every rank's pools, shared by every placement plan (one
// per sequence) that places blocks of one size in the same pools: a slot is
// `block_bytes` at slot * block_bytes. Thread-safe.
class PoolLedger {
 public:
  // `host_bytes[r]` and `disk_bytes[r]` (empty: no disk tier anywhere) are
  // rank r's budgets. InvalidArgument for an empty world, block_bytes < 1, a
  // negative budget or a disk list of another length.
  static absl::StatusOr<std::shared_ptr<PoolLedger>> Create(int64_t block_bytes,
                                                            std::vector<int64_t> host_bytes,
                                                            std::vector<int64_t> disk_bytes = {});

  int32_t world_size() const { return static_cast<int32_t>(pools_[0].size()); }
  int64_t block_bytes() const { return block_bytes_; }
  // A free slot of `rank`'s pool (lowest released first), or -1 when full.
  int64_t Acquire(int32_t rank, PoolTier tier = PoolTier::kHost);
  void Release(int32_t rank, PoolTier tier, int64_t slot);

  int64_t used_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const;
  int64_t peak_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const;
  int64_t pool_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const;

 private:
  struct Pool {
    int64_t budget = 0, used = 0, peak = 0;
    int64_t next_slot = 0;      // never used yet
    std::vector<int64_t> free;  // a min-heap of released slots
  };
  PoolLedger() = default;
  mutable std::mutex mu_;
  int64_t block_bytes_ = 0;
  std::vector<Pool> pools_[2];  // [tier][rank]
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

  // Assigns (layer, kv head, block) a home, charging its bytes to that
  // rank's pool: the preferred rank's host pool, else its disk (demoting the
  // plan's coldest host block there, see TakeDemotions), else the next rank
  // (in rank order, wrapping) with room. Placing an already placed block
  // returns its home.
  absl::StatusOr<BlockHome> Place(int32_t layer, int32_t kv_head, int32_t block);
  // Places a block on `rank` whatever the policy prefers (a restored
  // snapshot keeps each block on the rank that saved it): its host pool,
  // else its disk (no demotion). ResourceExhausted when both are full.
  absl::StatusOr<BlockHome> PlaceOn(int32_t layer, int32_t kv_head, int32_t block, int32_t rank);
  // The demotions Place made since the last call, in order; the caller moves
  // those blocks' bytes before writing anything into their host slots.
  std::vector<Demotion> TakeDemotions();
  // The home of a placed block; nullopt when it was never placed.
  std::optional<BlockHome> HomeOf(int32_t layer, int32_t kv_head, int32_t block) const;
  // Frees a placed block's bytes (truncation, session close).
  void Release(int32_t layer, int32_t kv_head, int32_t block);

  // The shared pools' figures (every plan on the ledger).
  int64_t used_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const {
    return ledger_->used_bytes(rank, tier);
  }
  int64_t peak_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const {
    return ledger_->peak_bytes(rank, tier);
  }
  int64_t pool_bytes(int32_t rank, PoolTier tier = PoolTier::kHost) const {
    return ledger_->pool_bytes(rank, tier);
  }
  const std::shared_ptr<PoolLedger>& ledger() const { return ledger_; }
  int64_t spilled_blocks() const { return spilled_blocks_; }
  int64_t demoted_blocks() const { return demoted_blocks_; }

 private:
  PlacementPlan() = default;
  uint64_t Key(int32_t layer, int32_t kv_head, int32_t block) const;
  // The plan's oldest block still in `rank`'s host pool, or nullopt.
  std::optional<uint64_t> ColdestHostBlock(int32_t rank);

  PlacementPolicy policy_ = PlacementPolicy::kHeadMajor;
  int32_t n_layers_ = 0;
  int32_t n_kv_heads_ = 0;
  std::shared_ptr<PoolLedger> ledger_;
  std::unordered_map<uint64_t, BlockHome> homes_;
  // Per rank, keys in the order they were placed in its host pool (entries
  // of blocks since released or demoted are skipped when met).
  std::vector<std::deque<uint64_t>> host_order_;
  std::vector<Demotion> demotions_;
  int64_t spilled_blocks_ = 0;
  int64_t demoted_blocks_ = 0;
};

}  // namespace headwise::cluster
