// The KV store of one sequence: blocks keyed by (layer, kv head, block), each
// `block_tokens` tokens of K then V in the KV dtype, living in a tier of the
// rank: `device` (the compute device's memory), `host` (host RAM) or `disk`
// (this rank's disk tier), or in another rank's pools. New tokens are appended to
// the open blocks on the device; full blocks are sealed and sent to their home
// tier asynchronously (HeadInfer). Per-tier budgets are enforced and current
// and peak bytes tracked. One sequence, one thread: not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cluster/cost_model.h"
#include "cluster/placement.h"
#include "comm/kv_transport.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "runtime/device/device.h"
#include "runtime/kv/disk_pool.h"
#include "runtime/kv/key_cache.h"
#include "runtime/kv/storage_rank.h"

namespace headwise::kv {

struct KvGeometry {
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_tokens = 256;
  kernels::KvDtype dtype = kernels::KvDtype::kF32;

  // Bytes of K plus V of one block of one (layer, kv head).
  int64_t BlockBytes() const;
  // Bytes of K plus V of one token over all layers and kv heads.
  int64_t TokenBytes() const;
};

// kRemote: in another rank's pools (distributed stores only; its host pool
// or its disk tier, see Home).
enum class Tier : uint8_t { kDevice = 0, kHost = 1, kRemote = 2, kDisk = 3 };
const char* TierName(Tier tier);

struct TierStats {
  int64_t used_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t budget_bytes = 0;  // 0: unlimited
};

// Which sealed KV a decode step attends to (DESIGN.md "policy"); prefill
// chunks are always exact, and approximate policies are named in every
// result's stats (Describe).
//  - exact: all of it.
//  - hybrid (HGCA): per kv head, the blocks holding the first `sink_tokens`
//    and the last `window_tokens` tokens densely, and of the rest the blocks
//    whose summary scores highest for the step's queries, until `budget` of
//    the sequence's tokens are attended. Summaries (`summary`): kKeys, the
//    block's approximate attention from `key_bits` quantized keys on the
//    coordinator (KeyCache, as quantkv's); kBounds, per-channel key min/max
//    (kernels/key_summary.h, Quest's), an upper bound of the block's best
//    score. With `pool_heads` the budget is the layer's, shared by its kv
//    heads.
//  - quantkv (HCAttention): keys quantized to `key_bits` on the coordinator
//    (KeyCache) score every token; per kv head the sinks and the window plus
//    the tokens whose approximate attention covers `tau` of the mass outside
//    the sinks and window (at most
//    `top_k` of them when > 0) are attended exactly where they live. Once
//    more than `budget` of the tokens are kept, those with the least
//    accumulated attention are evicted (never sinks or window).
struct AttentionPolicy {
  enum class Kind { kExact, kHybrid, kQuantKv };
  enum class BlockSummary { kKeys, kBounds };  // hybrid's block scores
  Kind kind = Kind::kExact;
  int32_t sink_tokens = 4;
  int32_t window_tokens = 512;
  // hybrid: fraction of the tokens attended; quantkv: fraction kept (the KV
  // budget). In (0, 1].
  double budget = 0.25;
  double tau = 0.9;      // quantkv: the others' approximate attention mass selected, (0, 1]
  int32_t top_k = 0;     // quantkv: most tokens selected per kv head (0: no cap)
  int32_t key_bits = 4;  // quantkv, hybrid's kKeys: 4 or 2
  // hybrid: inside each block chosen by its summary (not the sinks' or the
  // window's), only its this many best tokens by exact score, chosen where
  // the block lives (0: whole blocks).
  int32_t token_top_k = 0;
  BlockSummary summary = BlockSummary::kKeys;  // hybrid
  // hybrid with kKeys: a layer's kv heads share their budgets (HGCA's
  // per-head sparsity): the best blocks of any head are taken until the
  // heads' budgets together are spent, so a head whose attention sits in
  // few blocks leaves budget to one whose attention is spread out. A
  // block's key score is its share of its head's attention, so scores
  // compare across heads (bounds do not).
  bool pool_heads = false;

  // "exact", "hybrid(budget=0.25, summary=keys, key_bits=4, window=512,
  // sinks=4)" or "quantkv(kv_budget=0.25, tau=0.9, top_k=0, key_bits=4,
  // window=512, sinks=4)".
  std::string Describe() const;
  // InvalidArgument naming a bad knob.
  absl::Status Validate() const;
  const char* Name() const;
  // Whether decode steps read the quantized keys (KeyCache) / key bounds.
  bool NeedsKeys() const;
  bool NeedsBounds() const;
};
// "exact", "hybrid" or "quantkv" (others: nullopt).
std::optional<AttentionPolicy::Kind> ParsePolicyKind(std::string_view name);
// "keys" or "bounds" (others: nullopt), and back.
std::optional<AttentionPolicy::BlockSummary> ParseBlockSummary(std::string_view name);
const char* BlockSummaryName(AttentionPolicy::BlockSummary summary);

struct KvStoreOptions {
  KvGeometry geometry;
  device::Device* device = nullptr;  // not owned; must outlive the store
  // Device memory the store may use (KV blocks and staging). 0: unlimited,
  // which keeps every block resident on the device.
  int64_t device_budget_bytes = 0;
  int64_t host_budget_bytes = 0;  // 0: unlimited
  // Tokens the sequence may reach; with the budget it decides whether every
  // block can stay on the device or sealed blocks must stream from the host.
  int64_t capacity_tokens = 0;
  // The most tokens one Append brings (the prefill chunk).
  int32_t max_append_tokens = 4096;

  // Distributed KV (DESIGN.md "placement"): with a transport of more than
  // one rank, this store is the coordinator's; every sealed block gets a home
  // rank from `placement`, and blocks homed elsewhere are put into that
  // rank's pool (transport offsets = slot * BlockBytes) and leave this rank.
  // This rank's own share is bounded by host_budget_bytes.
  comm::KvTransport* transport = nullptr;  // not owned
  cluster::PlacementPolicy placement = cluster::PlacementPolicy::kHeadMajor;
  cluster::ExecMode mode = cluster::ExecMode::kAuto;
  cluster::CostModel costs;
  // The pools' slots, shared by every store placing blocks on the same
  // transport (sessions); null: this store is the only one and makes its own.
  std::shared_ptr<cluster::PoolLedger> pools;
  // Host landing buffers for pulled blocks on zero-copy devices (two of
  // them); streaming stores land pulls in their staging buffers' size.
  int64_t pull_buffer_bytes = int64_t{8} << 20;

  // This rank's disk tier (--disk-dir, --disk-mem): sealed blocks past the
  // host budget move there, coldest first. Other ranks' disk budgets come
  // from costs.ranks[r].disk_bytes. `disk_pool` is shared by every store of
  // this process (sessions); null with disk.bytes > 0: the store makes one.
  DiskTierOptions disk;
  std::shared_ptr<DiskPool> disk_pool;

  // The attention policy of this sequence (settable later: set_policy).
  AttentionPolicy policy;
  // Keep every policy's key summaries (hybrid's bounds, quantkv's quantized
  // keys) whatever the policy, so set_policy can switch a filled store (the
  // fidelity harness prefills once and decodes under each policy).
  bool keep_key_summaries = false;
};

// One block of a saved sequence: which it is, its tokens, and where its
// bytes were saved: entry `index` of rank `rank`'s block file.
struct SnapshotBlock {
  BlockTag tag;
  int32_t n_tokens = 0;
  int32_t rank = 0;
  int64_t index = 0;
};

// The block file of `rank` in a snapshot directory.
std::string SnapshotFile(const std::string& dir, int32_t rank);

// How a store keeps its blocks, decided once at creation.
enum class KvMode {
  kResident,   // every block on the compute device (cpu: host memory, zero copy)
  kStreaming,  // sealed blocks live on the host and stream through staging buffers
};

// The slot ledger of the pools a store of `options` places blocks in (one
// per process, shared by its stores): this rank's host share is its host
// budget (0: unlimited) less, on zero-copy devices, what the open blocks
// need; its disk share options.disk.bytes; every other rank's its registered
// pool and probed disk budget.
absl::StatusOr<std::shared_ptr<cluster::PoolLedger>> MakePoolLedger(const KvStoreOptions& options);
// This rank's disk tier for blocks of `options` (null without one).
absl::StatusOr<std::shared_ptr<DiskPool>> MakeDiskPool(const KvStoreOptions& options);

class KvStore {
 public:
  // InvalidArgument for a bad geometry; ResourceExhausted, naming the bytes
  // needed, when the device budget cannot hold the tails, one chunk's open
  // blocks and two staging blocks.
  static absl::StatusOr<std::unique_ptr<KvStore>> Create(const KvStoreOptions& options);
  ~KvStore();
  KvStore(const KvStore&) = delete;
  KvStore& operator=(const KvStore&) = delete;

  const KvGeometry& geometry() const { return geometry_; }
  device::Device& device() const { return *device_; }
  KvMode mode() const { return mode_; }
  int64_t n_tokens(int32_t layer) const { return n_tokens_[layer]; }
  // Tokens stored in every layer: the sequence length.
  int64_t length() const;

  // Appends `rows` tokens to `layer`'s open blocks on the device: k and v are
  // [rows x n_kv_heads x head_dim] f32 with `row_stride` floats between rows.
  // ResourceExhausted when a tier is full (with the numbers).
  absl::Status Append(int32_t layer, const float* k, const float* v, int64_t rows,
                      int64_t row_stride);
  // Seals every full open block of `layer` and starts sending it home. The
  // last, partly filled block stays open (the tail).
  absl::Status Seal(int32_t layer);

  // Blocks of `layer`: sealed ones [0, n_sealed) and open ones after them.
  int32_t n_sealed(int32_t layer) const { return n_sealed_[layer]; }
  int32_t n_blocks(int32_t layer) const;
  // Views of blocks [begin, end) of every kv head, head-major. Only for
  // blocks the device can compute on (open blocks, device-tier blocks, or any
  // block on a zero-copy device).
  void Views(int32_t layer, int32_t begin, int32_t end,
             std::vector<kernels::KvBlockView>& views) const;
  // Where block b of (layer, head) lives, and its bytes (K then V); waits for
  // its copy home to finish first.
  absl::StatusOr<const uint8_t*> SealedBlockData(int32_t layer, int32_t head, int32_t block);
  Tier BlockTier(int32_t layer, int32_t head, int32_t block) const;
  int32_t BlockTokens(int32_t layer, int32_t block) const;

  // The policy decode steps use, and per sealed or open block its key bounds:
  // min then max per channel (2 * head_dim floats) over the f32 keys
  // appended to it (a truncated block keeps its wider bounds: still bounds).
  const AttentionPolicy& policy() const { return options_.policy; }
  // InvalidArgument for a bad policy; FailedPrecondition when the store
  // holds tokens and did not keep the summaries the policy needs.
  absl::Status set_policy(const AttentionPolicy& policy);
  // quantkv's quantized keys and eviction state (null unless kept).
  KeyCache* key_cache() const { return keys_.get(); }
  const float* KeyBounds(int32_t layer, int32_t head, int32_t block) const {
    return bounds_[layer][head].data() + size_t(block) * 2 * geometry_.head_dim;
  }

  // Staging buffers (streaming mode only): two of staging_bytes() each.
  int64_t staging_bytes() const { return staging_bytes_; }
  void* staging(int index) const { return staging_[index].data(); }

  TierStats tier_stats(Tier tier) const;

  // A staging copy posted ahead of the layer that will compute on it (the
  // attention executor's cross-layer prefetch): which layer and blocks it
  // holds, in which staging buffer, and the views into it. At most one; the
  // store waits for it before anything could invalidate it (Truncate,
  // destruction).
  struct StagedCopy {
    int32_t layer = -1;  // -1: none
    int32_t head_begin = 0, head_end = 0, block_begin = 0, block_end = 0;
    int slot = 0;
    device::CopyTicket ticket = 0;
    std::vector<kernels::KvBlockView> views;
  };
  StagedCopy& staged() { return staged_; }

  // Drops every token at position >= n_tokens in every layer.
  absl::Status Truncate(int64_t n_tokens);

  // Snapshots (sessions that survive a restart). Save writes every block to
  // SnapshotFile(dir, r) on the rank r holding it (sealed or open; this
  // rank's from any tier) and returns the table Load needs. Load fills an
  // empty store with the same geometry from such files: each block goes
  // back to the rank that saved it (its host pool, else its disk), the
  // open blocks to this rank's device. FailedPrecondition when the table
  // does not fit this store (another world size, geometry or length);
  // DataLoss naming the block for a missing or corrupt one.
  absl::StatusOr<std::vector<SnapshotBlock>> Save(const std::string& dir);
  absl::Status Load(const std::string& dir, std::span<const SnapshotBlock> blocks,
                    int64_t n_tokens);

  // Distributed stores (a transport of more than one rank). A block's home
  // rank (0: here) and its offset in that rank's host pool (-1 for blocks
  // here or on a disk).
  bool distributed() const {
    return options_.transport != nullptr && options_.transport->size() > 1;
  }
  comm::KvTransport* transport() const { return options_.transport; }
  const KvStoreOptions& options() const { return options_; }
  const cluster::PlacementPlan* placement() const { return placement_ ? &*placement_ : nullptr; }
  int32_t BlockRank(int32_t layer, int32_t head, int32_t block) const;
  int64_t RemoteOffset(int32_t layer, int32_t head, int32_t block) const;
  // Where a sealed block lives in the placed pools: rank, host or disk, slot
  // (rank 0 host blocks: slot is the ledger's, the bytes are the store's).
  cluster::BlockHome Home(int32_t layer, int32_t head, int32_t block) const;
  // This rank's disk tier (null without one).
  DiskPool* disk() const { return disk_.get(); }
  // Waits until every block sent to another rank is visible there (a
  // delegate or pull of those blocks must not overtake their put).
  absl::Status AwaitRemoteHomes();
  // The view of one block this device can compute on (see Views).
  kernels::KvBlockView View(int32_t layer, int32_t head, int32_t block) const;
  // Host landing buffer `index` (0 or 1) for pulled blocks, of
  // landing_bytes(); allocated on first use.
  absl::StatusOr<uint8_t*> Landing(int index);
  int64_t landing_bytes() const;

 private:
  struct Block;
  explicit KvStore(const KvStoreOptions& options);
  absl::Status Init();
  absl::StatusOr<std::unique_ptr<Block>> NewOpenBlock();
  absl::Status SendHome(Block& block);
  // A host block from the pool (chunks from Device::AllocateHost), charged to
  // the host tier; ResourceExhausted past --host-mem.
  absl::StatusOr<uint8_t*> AcquireHostBlock();
  void ReleaseHostBlock(uint8_t* data);
  absl::Status ReopenTail(Block& block);
  absl::Status SendRemote(Block& block, int32_t rank, int64_t slot);
  // Carries out the plan's demotions (host slot -> disk slot) on every rank.
  absl::Status Demote(const std::vector<cluster::Demotion>& demotions);
  // Writes a sealed block of this rank to disk slot `slot` and frees its
  // host or device memory.
  absl::Status SendToDisk(Block& block, int32_t rank, int64_t slot, BlockTag tag);
  // The bytes of a block here once its copy home is done.
  absl::StatusOr<const uint8_t*> HostData(Block& block);
  // Host bytes of a block that may still be on the device (a bounce copy).
  absl::StatusOr<const uint8_t*> HostBytes(Block& block, std::vector<uint8_t>& bounce);
  // Retires finished copies home; for remote homes posts the put once the
  // block is on the host and frees it once the put landed. Errors of the
  // puts are returned (the block is lost to its home rank).
  absl::Status ReclaimFinishedCopies();
  void TrackDevice(int64_t delta);
  void TrackHost(int64_t delta);

  KvGeometry geometry_;
  device::Device* device_;
  KvStoreOptions options_;
  KvMode mode_ = KvMode::kResident;
  bool zero_copy_ = false;
  // blocks_[layer][kv_head][block]
  std::vector<std::vector<std::vector<std::unique_ptr<Block>>>> blocks_;
  std::vector<int64_t> n_tokens_;
  std::vector<int32_t> n_sealed_;
  std::vector<std::vector<std::vector<float>>> bounds_;  // [layer][head]: blocks x (min, max)
  bool keep_bounds_ = false;
  std::unique_ptr<KeyCache> keys_;
  std::vector<Block*> in_flight_;  // blocks whose copy home has not been reclaimed
  device::DeviceBuffer staging_[2];
  int64_t staging_bytes_ = 0;
  TierStats device_stats_;
  TierStats host_stats_;
  std::shared_ptr<DiskPool> disk_;
  StagedCopy staged_;
  std::vector<uint8_t*> host_free_;  // free blocks of the host pool
  std::vector<void*> host_chunks_;   // what Device::AllocateHost returned
  std::optional<cluster::PlacementPlan> placement_;
  void* landing_[2] = {nullptr, nullptr};  // Device::AllocateHost'd
};

}  // namespace headwise::kv
