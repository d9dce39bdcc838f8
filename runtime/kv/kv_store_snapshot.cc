// KvStore::Save and KvStore::Load: every rank writes (and later reads) the
// blocks it holds in its own block file (kv::StorageRank for memory ranks),
// so a snapshot moves no KV between ranks; the coordinator keeps the table
// of which block is where.
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/kv/kv_store.h"
#include "runtime/kv/kv_store_block.h"

namespace headwise::kv {

std::string SnapshotFile(const std::string& dir, int32_t rank) {
  return absl::StrCat(dir, "/rank", rank, ".kv");
}

absl::StatusOr<std::vector<SnapshotBlock>> KvStore::Save(const std::string& dir) {
  if (staged_.ticket != 0) {
    if (absl::Status s = device_->Wait(staged_.ticket); !s.ok()) return s;
  }
  staged_ = StagedCopy();
  if (distributed()) {
    if (absl::Status s = AwaitRemoteHomes(); !s.ok()) return s;
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));

  const int world = distributed() ? options_.transport->size() : 1;
  std::vector<std::vector<StoredBlock>> remote(world);
  std::vector<Block*> local;
  std::vector<BlockTag> local_tags;
  std::vector<SnapshotBlock> table;
  for (int32_t layer = 0; layer < geometry_.n_layers; ++layer) {
    for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
      for (size_t b = 0; b < blocks_[layer][h].size(); ++b) {
        Block& block = *blocks_[layer][h][b];
        const BlockTag tag{layer, h, static_cast<int32_t>(b)};
        if (block.tier == Tier::kRemote) {
          table.push_back({tag, block.n_tokens, block.rank, int64_t(remote[block.rank].size())});
          remote[block.rank].push_back({block.pool, block.slot, tag});
        } else {
          table.push_back({tag, block.n_tokens, 0, int64_t(local.size())});
          local.push_back(&block);
          local_tags.push_back(tag);
        }
      }
    }
  }
  const int64_t bytes = geometry_.BlockBytes();
  for (int r = 1; r < world; ++r) {
    if (absl::Status s =
            SnapshotSaveRemote(*options_.transport, r, bytes, SnapshotFile(dir, r), remote[r]);
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<BlockFileWriter> file =
      BlockFileWriter::Create(SnapshotFile(dir, 0), bytes, static_cast<int64_t>(local.size()));
  if (!file.ok()) return file.status();
  std::vector<uint8_t> bounce(static_cast<size_t>(bytes));
  for (size_t i = 0; i < local.size(); ++i) {
    Block& block = *local[i];
    const uint8_t* data = nullptr;
    if (block.tier == Tier::kDisk) {
      if (absl::Status s = disk_->Read(block.slot, bounce.data()); !s.ok()) return s;
      data = bounce.data();
    } else {
      absl::StatusOr<const uint8_t*> host = HostBytes(block, bounce);
      if (!host.ok()) return host.status();
      data = *host;
    }
    if (absl::Status s = file->Put(static_cast<int64_t>(i), data, local_tags[i]); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = file->Finish(); !s.ok()) return s;
  return table;
}

absl::Status KvStore::Load(const std::string& dir, std::span<const SnapshotBlock> blocks,
                           int64_t n_tokens) {
  if (keep_bounds_ || keys_ != nullptr) {
    return absl::FailedPreconditionError(
        "snapshots keep no key summaries: restore the sequence under the exact policy");
  }
  const KvGeometry& g = geometry_;
  const int world = distributed() ? options_.transport->size() : 1;
  const int64_t bt = g.block_tokens;
  const int64_t n_blocks = (n_tokens + bt - 1) / bt;
  const int32_t full = static_cast<int32_t>(n_tokens / bt);
  auto mismatch = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot in ", dir, " does not fit: ", why));
  };
  if (length() != 0) return mismatch("the store is not empty");
  if (n_tokens < 0 || int64_t(blocks.size()) != n_blocks * g.n_layers * g.n_kv_heads) {
    return mismatch(absl::StrCat(blocks.size(), " blocks for ", n_tokens, " tokens of ", g.n_layers,
                                 " layers x ", g.n_kv_heads, " kv heads"));
  }
  // Check the table: every block once, the right token counts, known ranks,
  // open blocks on this rank, file entries 0..n-1 per rank.
  std::vector<int32_t> seen(size_t(n_blocks) * g.n_layers * g.n_kv_heads, 0);
  std::vector<std::map<int64_t, const SnapshotBlock*>> by_rank(world);
  for (const SnapshotBlock& e : blocks) {
    const BlockTag& t = e.tag;
    if (t.layer < 0 || t.layer >= g.n_layers || t.kv_head < 0 || t.kv_head >= g.n_kv_heads ||
        t.block < 0 || t.block >= n_blocks || e.rank < 0 || e.rank >= world ||
        e.n_tokens != std::min<int64_t>(bt, n_tokens - int64_t(t.block) * bt) ||
        (e.rank != 0 && t.block >= full) || e.index < 0 ||
        seen[(size_t(t.block) * g.n_layers + t.layer) * g.n_kv_heads + t.kv_head]++ != 0 ||
        !by_rank[e.rank].emplace(e.index, &e).second) {
      return mismatch(absl::StrCat("block (layer ", t.layer, ", kv head ", t.kv_head, ", block ",
                                   t.block, ") of rank ", e.rank, " (entry ", e.index,
                                   ") is out of place in a ", world, "-rank store of ", n_tokens,
                                   " tokens"));
    }
  }
  for (int r = 0; r < world; ++r) {
    if (!by_rank[r].empty() && by_rank[r].rbegin()->first != int64_t(by_rank[r].size()) - 1) {
      return mismatch(absl::StrCat("rank ", r, "'s entries are not 0..", by_rank[r].size() - 1));
    }
  }
  if (world > 1 && !placement_) return mismatch("this store has no placement");

  const int64_t bytes = g.BlockBytes();
  for (auto& layer : blocks_) {
    for (auto& head : layer) {
      head.clear();
      head.resize(size_t(n_blocks));
    }
  }
  // This rank's blocks: from its file into the tier they would have now.
  std::vector<uint8_t> bounce(static_cast<size_t>(bytes));
  std::optional<BlockFileReader> file;
  if (!by_rank[0].empty()) {
    absl::StatusOr<BlockFileReader> opened = BlockFileReader::Open(SnapshotFile(dir, 0));
    if (!opened.ok()) return opened.status();
    if (opened->n_blocks() != int64_t(by_rank[0].size()) || opened->block_bytes() != bytes) {
      return mismatch(absl::StrCat(SnapshotFile(dir, 0), " holds ", opened->n_blocks(), " ",
                                   opened->block_bytes(), "-byte blocks"));
    }
    file.emplace(std::move(*opened));
  }
  for (const auto& [index, e] : by_rank[0]) {
    const BlockTag& t = e->tag;
    if (absl::Status s = file->Read(index, bounce.data()); !s.ok()) return s;
    std::unique_ptr<Block> block;
    const bool sealed = t.block < full;
    std::optional<cluster::BlockHome> home;
    if (sealed && placement_) {
      absl::StatusOr<cluster::BlockHome> placed =
          placement_->PlaceOn(t.layer, t.kv_head, t.block, 0);
      if (!placed.ok()) return placed.status();
      home = *placed;
    }
    if (home && home->tier == cluster::PoolTier::kDisk) {
      block = std::make_unique<Block>();
      if (absl::Status s = disk_->Write(home->slot, bounce.data(), t); !s.ok()) return s;
      block->tier = Tier::kDisk;
      block->pool = cluster::PoolTier::kDisk;
      block->slot = home->slot;
    } else if (sealed && mode_ == KvMode::kStreaming && !zero_copy_) {
      absl::StatusOr<uint8_t*> host = AcquireHostBlock();
      if (!host.ok()) return host.status();
      block = std::make_unique<Block>();
      std::memcpy(*host, bounce.data(), bounce.size());
      block->tier = Tier::kHost;
      block->host = block->data = *host;
    } else {
      absl::StatusOr<std::unique_ptr<Block>> open = NewOpenBlock();
      if (!open.ok()) return open.status();
      block = std::move(*open);
      if (block->tier == Tier::kDevice && !device_->capabilities().host_writes_device_memory) {
        absl::StatusOr<device::CopyTicket> copy = device_->PostCopy(
            device::CopyDirection::kToDevice, {{block->data, bounce.data(), bounce.size()}});
        if (!copy.ok()) return copy.status();
        if (absl::Status s = device_->Wait(*copy); !s.ok()) return s;
      } else {
        std::memcpy(block->data, bounce.data(), bounce.size());
      }
    }
    if (home) block->slot = home->tier == cluster::PoolTier::kDisk ? home->slot : -1;
    block->n_tokens = e->n_tokens;
    blocks_[t.layer][t.kv_head][t.block] = std::move(block);
  }
  // Other ranks' blocks: each loads its own file into the slots placed here.
  for (int r = 1; r < world; ++r) {
    std::vector<StoredBlock> load;
    for (const auto& [index, e] : by_rank[r]) {
      const BlockTag& t = e->tag;
      absl::StatusOr<cluster::BlockHome> home = placement_->PlaceOn(t.layer, t.kv_head, t.block, r);
      if (!home.ok()) return home.status();
      auto block = std::make_unique<Block>();
      block->tier = Tier::kRemote;
      block->rank = r;
      block->pool = home->tier;
      block->slot = home->slot;
      block->n_tokens = e->n_tokens;
      blocks_[t.layer][t.kv_head][t.block] = std::move(block);
      load.push_back({home->tier, home->slot, t});
    }
    if (load.empty()) continue;
    if (absl::Status s =
            SnapshotLoadRemote(*options_.transport, r, bytes, SnapshotFile(dir, r), load);
        !s.ok()) {
      return s;
    }
  }
  std::fill(n_tokens_.begin(), n_tokens_.end(), n_tokens);
  std::fill(n_sealed_.begin(), n_sealed_.end(), full);
  return absl::OkStatus();
}

}  // namespace headwise::kv
