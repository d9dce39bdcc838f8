// The storage side of the coordinator <-> memory rank protocol (DESIGN.md
// "tier", InstInfer): a memory rank's disk tier, made on first use with the
// block size the coordinator sends, and the calls that move blocks between
// its host pool, its disk and snapshot files. The coordinator decides every
// slot (cluster::PoolLedger); this side checks each offset, slot and length
// before use. The coordinator's own disk tier uses the same DiskPool
// directly (KvStore).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/placement.h"
#include "comm/kv_transport.h"
#include "runtime/kv/block_file.h"
#include "runtime/kv/disk_pool.h"
#include "runtime/kv/wire.h"

namespace headwise::kv {

// `--disk-dir` / `--disk-mem` of one rank; bytes 0: no disk tier.
struct DiskTierOptions {
  std::string dir;
  int64_t bytes = 0;
};

// A block to move or save: where it is on its rank and its name.
struct StoredBlock {
  cluster::PoolTier tier = cluster::PoolTier::kHost;
  int64_t slot = 0;
  BlockTag tag;
};

class StorageRank {
 public:
  StorageRank(comm::KvTransport& transport, DiskTierOptions disk)
      : transport_(transport), options_(std::move(disk)) {}

  // Handles the storage calls (kDemote, kDiskWrite, kFetch, kSnapshotSave,
  // kSnapshotLoad) with `body` after the kind; InvalidArgument for anything
  // malformed, DataLoss naming the block for a failed checksum.
  absl::StatusOr<comm::CallReply> Handle(CallKind kind, std::span<const std::byte> body);
  // The disk tier for blocks of `block_bytes`, made on first use;
  // FailedPrecondition without --disk-mem, InvalidArgument for another size.
  absl::StatusOr<DiskPool*> Disk(int64_t block_bytes);
  DiskPool* disk() const { return disk_.get(); }
  const DiskTierOptions& options() const { return options_; }

 private:
  // The host pool bytes of `slot` for blocks of `block_bytes`, or null.
  uint8_t* PoolSlot(int64_t slot, int64_t block_bytes) const;
  absl::StatusOr<comm::CallReply> SnapshotSave(WireReader& in);
  absl::StatusOr<comm::CallReply> SnapshotLoad(WireReader& in);

  comm::KvTransport& transport_;
  DiskTierOptions options_;
  std::unique_ptr<DiskPool> disk_;
};

// Coordinator side: the same operations on rank `rank` (> 0) as calls, each
// waited for (bounded by the transport's peer timeout).
absl::Status DemoteRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                          std::span<const cluster::Demotion> demotions);
absl::Status DiskWriteRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                             int64_t slot, BlockTag tag, const uint8_t* data);
// Reads disk `slots` of `rank` into `dst` (slots.size() * block_bytes).
absl::Status FetchRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                         std::span<const int64_t> slots, uint8_t* dst);
// Saves `blocks` of `rank` in order as the block file `path` on that rank.
absl::Status SnapshotSaveRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                                const std::string& path, std::span<const StoredBlock> blocks);
// Loads entry i of the block file `path` on `rank` into `blocks[i]`'s slot.
absl::Status SnapshotLoadRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                                const std::string& path, std::span<const StoredBlock> blocks);

}  // namespace headwise::kv
