// KvStore's placed blocks: the pool ledger and disk tier a store places
// into, and moving sealed blocks to their homes — other ranks' pools (puts),
// disks (this rank's or another's), and demotions from host to disk.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "runtime/kv/kv_store.h"
#include "runtime/kv/kv_store_block.h"

namespace headwise::kv {

namespace {

// Host bytes a zero-copy store's open blocks take beside its sealed ones:
// one tail per (layer, kv head) and one chunk's open blocks for two layers.
int64_t OpenBlockBytes(const KvStoreOptions& options) {
  const KvGeometry& g = options.geometry;
  const int64_t append_blocks = (options.max_append_tokens + g.block_tokens - 1) / g.block_tokens;
  return (int64_t(g.n_layers) * g.n_kv_heads + 2 * int64_t(g.n_kv_heads) * append_blocks) *
         g.BlockBytes();
}

}  // namespace

absl::StatusOr<std::shared_ptr<cluster::PoolLedger>> MakePoolLedger(const KvStoreOptions& options) {
  const int64_t block = options.geometry.BlockBytes();
  const comm::KvTransport* transport = options.transport;
  const int world = transport != nullptr ? transport->size() : 1;
  std::vector<int64_t> host, disk;
  // This rank's share is its host budget (unlimited: as large as a ledger
  // can count) less the open blocks of a zero-copy device.
  int64_t share = std::numeric_limits<int64_t>::max() / 4;
  if (options.host_budget_bytes > 0) {
    share = options.host_budget_bytes;
    if (options.device != nullptr && options.device->capabilities().zero_copy_host) {
      share = std::max<int64_t>(0, share - OpenBlockBytes(options));
    }
  }
  host.push_back(share);
  disk.push_back(options.disk_pool != nullptr
                     ? options.disk_pool->slots() * options.disk_pool->block_bytes()
                     : options.disk.bytes);
  for (int r = 1; r < world; ++r) {
    host.push_back(transport->peers()[r].pool_bytes);
    disk.push_back(
        r < static_cast<int>(options.costs.ranks.size()) ? options.costs.ranks[r].disk_bytes : 0);
  }
  return cluster::PoolLedger::Create(block, std::move(host), std::move(disk));
}

absl::StatusOr<std::shared_ptr<DiskPool>> MakeDiskPool(const KvStoreOptions& options) {
  if (options.disk.bytes <= 0) return std::shared_ptr<DiskPool>();
  DiskPoolOptions disk;
  disk.dir = options.disk.dir;
  disk.capacity_bytes = options.disk.bytes;
  disk.block_bytes = options.geometry.BlockBytes();
  disk.rank = options.transport != nullptr ? options.transport->rank() : 0;
  absl::StatusOr<std::unique_ptr<DiskPool>> made = DiskPool::Create(disk);
  if (!made.ok()) return made.status();
  return std::shared_ptr<DiskPool>(std::move(*made));
}

absl::Status KvStore::ReclaimFinishedCopies() {
  absl::Status status;
  auto done = [&](Block* block) {
    if (block->copy_home != 0 && !device_->Poll(block->copy_home)) return false;
    block->copy_home = 0;
    if (block->device_buffer) {
      TrackDevice(-static_cast<int64_t>(block->device_buffer.size()));
      block->device_buffer = device::DeviceBuffer();
    }
    if (block->tier != Tier::kRemote) return true;
    comm::KvTransport& transport = *options_.transport;
    const int64_t bytes = geometry_.BlockBytes();
    if (block->put == 0) {
      absl::StatusOr<comm::RmaTicket> put = transport.PostPuts(
          block->rank,
          {{block->host, static_cast<uint64_t>(block->slot * bytes), static_cast<size_t>(bytes)}});
      if (!put.ok()) {
        status.Update(put.status());
        return false;
      }
      block->put = *put;
    }
    if (!transport.Poll(block->put)) return false;
    status.Update(transport.Wait(block->put));
    block->put = 0;
    ReleaseHostBlock(block->host);
    block->host = block->data = nullptr;
    return true;
  };
  in_flight_.erase(std::remove_if(in_flight_.begin(), in_flight_.end(), done), in_flight_.end());
  return status;
}

absl::Status KvStore::AwaitRemoteHomes() {
  for (Block* block : in_flight_) {
    if (block->tier != Tier::kRemote) continue;
    if (block->copy_home != 0) {
      if (absl::Status s = device_->Wait(block->copy_home); !s.ok()) return s;
    }
  }
  if (absl::Status s = ReclaimFinishedCopies(); !s.ok()) return s;
  for (Block* block : in_flight_) {
    if (block->tier != Tier::kRemote || block->put == 0) continue;
    absl::Status s = options_.transport->Wait(block->put);
    block->put = 0;
    if (!s.ok()) return s;
    ReleaseHostBlock(block->host);
    block->host = block->data = nullptr;
  }
  in_flight_.erase(std::remove_if(in_flight_.begin(), in_flight_.end(),
                                  [](Block* b) { return b->tier == Tier::kRemote; }),
                   in_flight_.end());
  return absl::OkStatus();
}

absl::Status KvStore::SendRemote(Block& block, int32_t rank, int64_t slot) {
  block.rank = rank;
  block.slot = slot;
  if (!zero_copy_) {
    // Off the device through a host block first; the put starts from there.
    absl::StatusOr<uint8_t*> host = AcquireHostBlock();
    if (!host.ok()) return host.status();
    block.host = *host;
    absl::StatusOr<device::CopyTicket> ticket =
        device_->PostCopy(device::CopyDirection::kToHost,
                          {{block.host, block.data, static_cast<size_t>(geometry_.BlockBytes())}});
    if (!ticket.ok()) return ticket.status();
    block.copy_home = *ticket;
  }
  block.tier = Tier::kRemote;
  block.data = nullptr;
  in_flight_.push_back(&block);
  return absl::OkStatus();
}

int32_t KvStore::BlockRank(int32_t layer, int32_t head, int32_t block) const {
  return blocks_[layer][head][block]->rank;
}

int64_t KvStore::RemoteOffset(int32_t layer, int32_t head, int32_t block) const {
  const Block& b = *blocks_[layer][head][block];
  return b.tier == Tier::kRemote && b.pool == cluster::PoolTier::kHost
             ? b.slot * geometry_.BlockBytes()
             : -1;
}

cluster::BlockHome KvStore::Home(int32_t layer, int32_t head, int32_t block) const {
  const Block& b = *blocks_[layer][head][block];
  const bool on_disk =
      b.tier == Tier::kDisk || (b.tier == Tier::kRemote && b.pool == cluster::PoolTier::kDisk);
  return {b.rank, on_disk ? cluster::PoolTier::kDisk : cluster::PoolTier::kHost, b.slot};
}

absl::StatusOr<const uint8_t*> KvStore::HostBytes(Block& block, std::vector<uint8_t>& bounce) {
  if (block.tier != Tier::kDevice || zero_copy_) return HostData(block);
  bounce.resize(static_cast<size_t>(geometry_.BlockBytes()));
  absl::StatusOr<device::CopyTicket> ticket = device_->PostCopy(
      device::CopyDirection::kToHost, {{bounce.data(), block.data, bounce.size()}});
  if (!ticket.ok()) return ticket.status();
  if (absl::Status s = device_->Wait(*ticket); !s.ok()) return s;
  return bounce.data();
}

absl::Status KvStore::SendToDisk(Block& block, int32_t rank, int64_t slot, BlockTag tag) {
  std::vector<uint8_t> bounce;
  absl::StatusOr<const uint8_t*> bytes = HostBytes(block, bounce);
  if (!bytes.ok()) return bytes.status();
  absl::Status written =
      rank == 0
          ? (disk_ == nullptr ? absl::InternalError("no disk tier on rank 0")
                              : disk_->Write(slot, *bytes, tag))
          : DiskWriteRemote(*options_.transport, rank, geometry_.BlockBytes(), slot, tag, *bytes);
  if (!written.ok()) return written;
  in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), &block), in_flight_.end());
  if (block.device_buffer) {
    TrackDevice(-static_cast<int64_t>(block.device_buffer.size()));
    block.device_buffer = device::DeviceBuffer();
  }
  if (block.host != nullptr) ReleaseHostBlock(block.host);
  block.host = block.data = nullptr;
  block.tier = rank == 0 ? Tier::kDisk : Tier::kRemote;
  block.rank = rank;
  block.pool = cluster::PoolTier::kDisk;
  block.slot = slot;
  return absl::OkStatus();
}

absl::Status KvStore::Demote(const std::vector<cluster::Demotion>& demotions) {
  if (demotions.empty()) return absl::OkStatus();
  std::vector<std::vector<cluster::Demotion>> remote(distributed() ? options_.transport->size()
                                                                   : 1);
  // A prefetch of the next layer may be reading a block about to leave the
  // host (and its staged item would no longer match that layer's lists).
  if (staged_.ticket != 0) {
    if (absl::Status s = device_->Wait(staged_.ticket); !s.ok()) return s;
  }
  staged_ = StagedCopy();
  for (const cluster::Demotion& d : demotions) {
    Block& block = *blocks_[d.layer][d.kv_head][d.block];
    if (d.rank == 0) {
      if (absl::Status s = SendToDisk(block, 0, d.disk_slot, {d.layer, d.kv_head, d.block});
          !s.ok()) {
        return s;
      }
    } else {
      remote[d.rank].push_back(d);
    }
  }
  bool waited = false;
  for (size_t r = 1; r < remote.size(); ++r) {
    if (remote[r].empty()) continue;
    // The demoted blocks' puts must have landed before their rank reads them.
    if (!waited) {
      if (absl::Status s = AwaitRemoteHomes(); !s.ok()) return s;
      waited = true;
    }
    if (absl::Status s = DemoteRemote(*options_.transport, static_cast<int32_t>(r),
                                      geometry_.BlockBytes(), remote[r]);
        !s.ok()) {
      return s;
    }
    for (const cluster::Demotion& d : remote[r]) {
      Block& block = *blocks_[d.layer][d.kv_head][d.block];
      block.pool = cluster::PoolTier::kDisk;
      block.slot = d.disk_slot;
    }
  }
  return absl::OkStatus();
}

}  // namespace headwise::kv
