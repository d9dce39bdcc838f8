// Wire formats (after the u32 kind, see wire.h), every call carrying the
// block size so the disk tier can be made on first use:
//   kDemote:       i64 block_bytes, i32 n, n x {i64 host slot, i64 disk slot, tag}
//   kDiskWrite:    i64 block_bytes, i64 disk slot, tag, block_bytes of data
//   kFetch:        i64 block_bytes, i32 n, n x i64 disk slot -> n blocks of bytes
//   kSnapshotSave: path, i64 block_bytes, i32 n, n x {u8 tier, i64 slot, tag}
//   kSnapshotLoad: path, i64 block_bytes, i32 n, n x {u8 tier, i64 slot, tag}
// A tag is three i32: layer, kv head, block.
#include "runtime/kv/storage_rank.h"

#include "absl/strings/str_cat.h"

namespace headwise::kv {
namespace {

// Blocks a single call may carry (a bound on what a peer can ask for).
constexpr int32_t kMaxBlocksPerCall = 1 << 20;
constexpr int64_t kMaxBlockBytes = int64_t{1} << 30;

absl::Status Malformed(const std::string& what) {
  return absl::InvalidArgumentError("malformed storage call: " + what);
}

void PutTag(WireWriter& w, const BlockTag& tag) {
  w.Put(tag.layer);
  w.Put(tag.kv_head);
  w.Put(tag.block);
}

bool GetTag(WireReader& in, BlockTag* tag) {
  return in.Get(&tag->layer) && in.Get(&tag->kv_head) && in.Get(&tag->block);
}

bool GetHeader(WireReader& in, int64_t* block_bytes, int32_t* n) {
  return in.Get(block_bytes) && *block_bytes > 0 && *block_bytes <= kMaxBlockBytes && in.Get(n) &&
         *n >= 0 && *n <= kMaxBlocksPerCall;
}

void PutBlocks(WireWriter& w, std::span<const StoredBlock> blocks) {
  w.Put(static_cast<int32_t>(blocks.size()));
  for (const StoredBlock& b : blocks) {
    w.Put(static_cast<uint8_t>(b.tier));
    w.Put(b.slot);
    PutTag(w, b.tag);
  }
}

bool GetBlocks(WireReader& in, int32_t n, std::vector<StoredBlock>* blocks) {
  blocks->resize(static_cast<size_t>(n));
  for (StoredBlock& b : *blocks) {
    uint8_t tier = 0;
    if (!in.Get(&tier) || tier > 1 || !in.Get(&b.slot) || !GetTag(in, &b.tag)) return false;
    b.tier = static_cast<cluster::PoolTier>(tier);
  }
  return true;
}

// A snapshot call's body: path, header, blocks, nothing after.
bool GetSnapshotCall(WireReader& in, std::string* path, int64_t* block_bytes, int32_t* n,
                     std::vector<StoredBlock>* blocks) {
  return in.GetString(path) && GetHeader(in, block_bytes, n) && GetBlocks(in, *n, blocks) &&
         in.remaining() == 0;
}

absl::Status CallFor(comm::KvTransport& transport, int32_t rank, std::vector<std::byte> request,
                     std::vector<std::byte>* reply = nullptr) {
  absl::StatusOr<std::vector<std::byte>> got = Call(transport, rank, std::move(request));
  if (!got.ok()) return got.status();
  if (reply != nullptr) *reply = std::move(*got);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DiskPool*> StorageRank::Disk(int64_t block_bytes) {
  if (disk_ != nullptr) {
    if (disk_->block_bytes() != block_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", transport_.rank(),
                                                     "'s disk tier holds ", disk_->block_bytes(),
                                                     "-byte blocks, asked for ", block_bytes));
    }
    return disk_.get();
  }
  if (options_.bytes <= 0 || options_.dir.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", transport_.rank(), " has no disk tier (--disk-dir / --disk-mem)"));
  }
  DiskPoolOptions options;
  options.dir = options_.dir;
  options.capacity_bytes = options_.bytes;
  options.block_bytes = block_bytes;
  options.rank = transport_.rank();
  absl::StatusOr<std::unique_ptr<DiskPool>> made = DiskPool::Create(options);
  if (!made.ok()) return made.status();
  disk_ = std::move(*made);
  return disk_.get();
}

uint8_t* StorageRank::PoolSlot(int64_t slot, int64_t block_bytes) const {
  const int64_t pool = transport_.peers()[transport_.rank()].pool_bytes;
  if (slot < 0 || slot > pool / block_bytes - 1) return nullptr;
  return transport_.pool() + slot * block_bytes;
}

absl::StatusOr<comm::CallReply> StorageRank::Handle(CallKind kind,
                                                    std::span<const std::byte> body) {
  WireReader in(body);
  switch (kind) {
    case CallKind::kDemote: {
      int64_t block_bytes = 0;
      int32_t n = 0;
      if (!GetHeader(in, &block_bytes, &n)) return Malformed("demote header");
      absl::StatusOr<DiskPool*> disk = Disk(block_bytes);
      if (!disk.ok()) return disk.status();
      std::vector<int64_t> slots(n);
      std::vector<const void*> data(n);
      std::vector<BlockTag> tags(n);
      for (int32_t i = 0; i < n; ++i) {
        int64_t host_slot = 0;
        if (!in.Get(&host_slot) || !in.Get(&slots[i]) || !GetTag(in, &tags[i])) {
          return Malformed(absl::StrCat("demote entry ", i));
        }
        data[i] = PoolSlot(host_slot, block_bytes);
        if (data[i] == nullptr) return Malformed(absl::StrCat("host slot ", host_slot));
      }
      if (absl::Status s = (*disk)->WriteMany(slots, data, tags); !s.ok()) return s;
      return comm::CallReply{};
    }
    case CallKind::kDiskWrite: {
      int64_t block_bytes = 0, slot = 0;
      BlockTag tag;
      if (!in.Get(&block_bytes) || block_bytes < 1 || block_bytes > kMaxBlockBytes ||
          !in.Get(&slot) || !GetTag(in, &tag) || in.remaining() != uint64_t(block_bytes)) {
        return Malformed("disk write");
      }
      absl::StatusOr<DiskPool*> disk = Disk(block_bytes);
      if (!disk.ok()) return disk.status();
      if (absl::Status s = (*disk)->Write(slot, in.Take(block_bytes), tag); !s.ok()) return s;
      return comm::CallReply{};
    }
    case CallKind::kFetch: {
      int64_t block_bytes = 0;
      int32_t n = 0;
      if (!GetHeader(in, &block_bytes, &n) || in.remaining() != uint64_t(n) * sizeof(int64_t)) {
        return Malformed("fetch header");
      }
      absl::StatusOr<DiskPool*> disk = Disk(block_bytes);
      if (!disk.ok()) return disk.status();
      std::vector<int64_t> slots(n);
      for (int64_t& slot : slots) in.Get(&slot);
      comm::CallReply reply;
      reply.bytes.resize(size_t(n) * size_t(block_bytes));
      auto* out = reinterpret_cast<uint8_t*>(reply.bytes.data());
      absl::Status s = (*disk)->Stream(
          slots, int64_t{8} << 20, [&](size_t first, size_t count, const uint8_t* data) {
            std::memcpy(out + first * block_bytes, data, count * size_t(block_bytes));
            return absl::OkStatus();
          });
      if (!s.ok()) return s;
      return reply;
    }
    case CallKind::kSnapshotSave:
      return SnapshotSave(in);
    case CallKind::kSnapshotLoad:
      return SnapshotLoad(in);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("not a storage call: ", static_cast<uint32_t>(kind)));
  }
}

absl::StatusOr<comm::CallReply> StorageRank::SnapshotSave(WireReader& in) {
  std::string path;
  int64_t block_bytes = 0;
  int32_t n = 0;
  std::vector<StoredBlock> blocks;
  if (!GetSnapshotCall(in, &path, &block_bytes, &n, &blocks)) return Malformed("snapshot save");
  absl::StatusOr<BlockFileWriter> file = BlockFileWriter::Create(path, block_bytes, n);
  if (!file.ok()) return file.status();
  std::vector<uint8_t> bounce(static_cast<size_t>(block_bytes));
  for (int32_t i = 0; i < n; ++i) {
    const StoredBlock& b = blocks[i];
    const uint8_t* data = nullptr;
    if (b.tier == cluster::PoolTier::kHost) {
      data = PoolSlot(b.slot, block_bytes);
      if (data == nullptr) return Malformed(absl::StrCat("host slot ", b.slot));
    } else {
      absl::StatusOr<DiskPool*> disk = Disk(block_bytes);
      if (!disk.ok()) return disk.status();
      if (absl::Status s = (*disk)->Read(b.slot, bounce.data()); !s.ok()) return s;
      data = bounce.data();
    }
    if (absl::Status s = file->Put(i, data, b.tag); !s.ok()) return s;
  }
  if (absl::Status s = file->Finish(); !s.ok()) return s;
  return comm::CallReply{};
}

absl::StatusOr<comm::CallReply> StorageRank::SnapshotLoad(WireReader& in) {
  std::string path;
  int64_t block_bytes = 0;
  int32_t n = 0;
  std::vector<StoredBlock> blocks;
  if (!GetSnapshotCall(in, &path, &block_bytes, &n, &blocks)) return Malformed("snapshot load");
  absl::StatusOr<BlockFileReader> file = BlockFileReader::Open(path);
  if (!file.ok()) return file.status();
  if (file->block_bytes() != block_bytes || file->n_blocks() != n) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", transport_.rank(), ": ", path, " holds ", file->n_blocks(), " ",
        file->block_bytes(), "-byte blocks; the session needs ", n, " of ", block_bytes));
  }
  std::vector<uint8_t> bounce(static_cast<size_t>(block_bytes));
  for (int32_t i = 0; i < n; ++i) {
    const StoredBlock& b = blocks[i];
    if (b.tier == cluster::PoolTier::kHost) {
      uint8_t* dst = PoolSlot(b.slot, block_bytes);
      if (dst == nullptr) return Malformed(absl::StrCat("host slot ", b.slot));
      if (absl::Status s = file->Read(i, dst); !s.ok()) return s;
    } else {
      absl::StatusOr<DiskPool*> disk = Disk(block_bytes);
      if (!disk.ok()) return disk.status();
      if (absl::Status s = file->Read(i, bounce.data()); !s.ok()) return s;
      if (absl::Status s = (*disk)->Write(b.slot, bounce.data(), file->tag(i)); !s.ok()) return s;
    }
  }
  return comm::CallReply{};
}

absl::Status DemoteRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                          std::span<const cluster::Demotion> demotions) {
  WireWriter w(CallKind::kDemote);
  w.Put(block_bytes);
  w.Put(static_cast<int32_t>(demotions.size()));
  for (const cluster::Demotion& d : demotions) {
    w.Put(d.host_slot);
    w.Put(d.disk_slot);
    PutTag(w, {d.layer, d.kv_head, d.block});
  }
  return CallFor(transport, rank, w.Take());
}

absl::Status DiskWriteRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                             int64_t slot, BlockTag tag, const uint8_t* data) {
  WireWriter w(CallKind::kDiskWrite);
  w.Put(block_bytes);
  w.Put(slot);
  PutTag(w, tag);
  w.PutArray(data, static_cast<size_t>(block_bytes));
  return CallFor(transport, rank, w.Take());
}

absl::Status FetchRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                         std::span<const int64_t> slots, uint8_t* dst) {
  WireWriter w(CallKind::kFetch);
  w.Put(block_bytes);
  w.Put(static_cast<int32_t>(slots.size()));
  w.PutArray(slots.data(), slots.size());
  std::vector<std::byte> reply;
  if (absl::Status s = CallFor(transport, rank, w.Take(), &reply); !s.ok()) return s;
  if (reply.size() != slots.size() * size_t(block_bytes)) {
    return absl::InternalError(absl::StrCat("rank ", rank, " fetched ", reply.size(),
                                            " bytes, expected ", slots.size() * block_bytes));
  }
  std::memcpy(dst, reply.data(), reply.size());
  return absl::OkStatus();
}

absl::Status SnapshotSaveRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                                const std::string& path, std::span<const StoredBlock> blocks) {
  WireWriter w(CallKind::kSnapshotSave);
  w.PutString(path);
  w.Put(block_bytes);
  PutBlocks(w, blocks);
  return CallFor(transport, rank, w.Take());
}

absl::Status SnapshotLoadRemote(comm::KvTransport& transport, int32_t rank, int64_t block_bytes,
                                const std::string& path, std::span<const StoredBlock> blocks) {
  WireWriter w(CallKind::kSnapshotLoad);
  w.PutString(path);
  w.Put(block_bytes);
  PutBlocks(w, blocks);
  return CallFor(transport, rank, w.Take());
}

}  // namespace headwise::kv
