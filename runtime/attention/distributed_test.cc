// The distributed KV path in one process: LoopbackWorld ranks hold the pools
// and answer delegate calls with MemoryRank, so every placement x mode x
// world size x coordinator device runs the real executor and protocol and
// must give the single-process all-resident run's greedy tokens and logits.
// FaultyTransport shows a lost rank surfaces as UNAVAILABLE naming it.
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "comm/loopback_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/attention/attend.h"
#include "runtime/attention/distributed_fixture.h"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"
#include "tests/util/numerics.h"

namespace headwise::attention {
namespace {

using ::headwise::testing::RelL2;
using ::testing::HasSubstr;

TEST_F(DistributedTest, EveryWorldPlacementModeAndDeviceMatchesTheSingleProcessRun) {
  auto sim = device::MakeSimDevice({int64_t{1} << 20, 0.0}, pool_);
  ASSERT_TRUE(sim.ok()) << sim.status();
  for (int size = 1; size <= 4; ++size) {
    for (cluster::PlacementPolicy placement :
         {cluster::PlacementPolicy::kHeadMajor, cluster::PlacementPolicy::kStriped}) {
      for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
        for (device::Device* device : {cpu_, sim->get()}) {
          const std::string where =
              absl::StrCat(size, " ranks, ", cluster::PlacementName(placement), ", ",
                           cluster::ExecModeName(mode), ", ", std::string(device->name()));
          World world(size, int64_t{64} << 20);
          kv::KvStoreOptions options = Options(device);
          if (device != cpu_) options.device_budget_bytes = int64_t{1} << 20;
          options.transport = &world.loopback.transport(0);
          options.placement = placement;
          options.mode = mode;
          absl::StatusOr<RunResult> run = Generate(options);
          ASSERT_TRUE(run.ok()) << where << ": " << run.status();
          EXPECT_EQ(run->tokens, reference_->tokens) << where;
          EXPECT_LT(RelL2(run->prompt_logits, reference_->prompt_logits), 1e-5) << where;
          if (size > 1) {
            // Every memory rank holds blocks; delegate sends queries, pull reads KV.
            for (int r = 1; r < size; ++r) {
              const comm::PeerTraffic traffic = options.transport->traffic(r);
              EXPECT_GT(traffic.bytes_sent, 0) << where << " rank " << r;
              if (mode == cluster::ExecMode::kDelegate) {
                EXPECT_GT(traffic.calls, 0) << where;
                EXPECT_GT(world.ranks[r - 1]->stats().kv_bytes_attended, 0) << where;
              } else {
                EXPECT_EQ(traffic.calls, 0) << where;
              }
            }
            EXPECT_EQ(run->stats.delegate_calls > 0, mode == cluster::ExecMode::kDelegate) << where;
            EXPECT_EQ(run->stats.bytes_pulled > 0, mode == cluster::ExecMode::kPull) << where;
          }
        }
      }
    }
  }
}

TEST_F(DistributedTest, DelegateMovesQueriesNotKv) {
  World world(3, int64_t{64} << 20);
  kv::KvStoreOptions options = Options(cpu_);
  options.transport = &world.loopback.transport(0);
  options.mode = cluster::ExecMode::kDelegate;
  ASSERT_TRUE(Generate(options).ok());
  const int64_t decode_kv = options.geometry.TokenBytes() * kPrompt;
  // Received from rank 1: (o, lse) replies only, far less than its KV share.
  EXPECT_LT(options.transport->traffic(1).bytes_received, decode_kv / 3);
  EXPECT_GT(world.ranks[0]->stats().kv_bytes_attended, decode_kv / 3);
}

TEST_F(DistributedTest, FullPoolsSpillAndAFullClusterIsResourceExhausted) {
  // 3 layers x 3 kv heads x 21 sealed blocks, striped: 63 blocks per rank.
  const int64_t block = BlockBytes();
  {
    const int64_t per_rank = 33 * block;  // about half of rank 1's share
    comm::LoopbackWorld small({0, per_rank, int64_t{64} << 20});
    MemoryRank rank1(small.transport(1), *cpu_), rank2(small.transport(2), *cpu_);
    ASSERT_TRUE(rank1.Serve().ok());
    ASSERT_TRUE(rank2.Serve().ok());
    kv::KvStoreOptions options = Options(cpu_);
    options.transport = &small.transport(0);
    options.placement = cluster::PlacementPolicy::kStriped;
    options.mode = cluster::ExecMode::kDelegate;
    absl::StatusOr<RunResult> run = Generate(options);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->tokens, reference_->tokens);
    EXPECT_GT(small.transport(2).peers().size(), 0u);
  }
  comm::LoopbackWorld tiny({0, 8 * block, 8 * block});
  MemoryRank rank1(tiny.transport(1), *cpu_), rank2(tiny.transport(2), *cpu_);
  ASSERT_TRUE(rank1.Serve().ok());
  ASSERT_TRUE(rank2.Serve().ok());
  kv::KvStoreOptions options = Options(cpu_);
  options.host_budget_bytes = 40 * block;
  options.transport = &tiny.transport(0);
  absl::StatusOr<RunResult> run = Generate(options);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kResourceExhausted) << run.status();
}

TEST_F(DistributedTest, ASlowLinkHoldsAppendsBackInsteadOfFailingThem) {
  // Blocks on their way to rank 1 hold host blocks until their puts land:
  // filling a store faster than the link drains it (Append + Seal, no
  // attention in between) waits for the puts instead of failing.
  const int64_t block = BlockBytes();
  World world(2, int64_t{64} << 20);
  comm::FaultyTransport slow(world.loopback.transport(0), {.rank = 1, .polls_before_done = 1000});
  kv::KvStoreOptions options = Options(cpu_);
  options.transport = &slow;
  options.host_budget_bytes = 60 * block;  // 39 for open blocks and tails
  options.placement = cluster::PlacementPolicy::kStriped;
  auto store = kv::KvStore::Create(options);
  ASSERT_TRUE(store.ok()) << store.status();
  const kv::KvGeometry& g = options.geometry;
  const std::vector<float> kv(size_t(kChunk) * g.n_kv_heads * g.head_dim, 0.25f);
  for (int chunk = 0; chunk < 4; ++chunk) {
    for (int32_t layer = 0; layer < g.n_layers; ++layer) {
      absl::Status s =
          (*store)->Append(layer, kv.data(), kv.data(), kChunk, int64_t(g.n_kv_heads) * g.head_dim);
      ASSERT_TRUE(s.ok()) << "chunk " << chunk << ": " << s;
      ASSERT_TRUE((*store)->Seal(layer).ok());
    }
  }
  EXPECT_EQ((*store)->length(), 4 * kChunk);
  EXPECT_LE((*store)->tier_stats(kv::Tier::kHost).peak_bytes, 60 * block);
}

TEST_F(DistributedTest, ALostRankIsUnavailableNamingIt) {
  for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
    World world(3, int64_t{64} << 20);
    comm::FaultyTransport faulty(world.loopback.transport(0), {.rank = 2, .fail_after = 40});
    kv::KvStoreOptions options = Options(cpu_);
    options.transport = &faulty;
    options.mode = mode;
    absl::StatusOr<RunResult> run = Generate(options);
    ASSERT_FALSE(run.ok()) << cluster::ExecModeName(mode);
    EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(run.status().message()), HasSubstr("rank 2"));
    EXPECT_GE(faulty.injected_failures(), 1);
  }
}

TEST_F(DistributedTest, StoresShareThePoolsAndATruncatedTailComesBack) {
  // Two sequences (sessions) in the same pools through one ledger, each
  // giving its single-process result; then truncating into a block homed
  // on another rank fetches it back and the sequence continues exactly.
  std::vector<int32_t> other(prompt_->rbegin(), prompt_->rend());
  for (cluster::PlacementPolicy placement :
       {cluster::PlacementPolicy::kHeadMajor, cluster::PlacementPolicy::kStriped}) {
    World world(3, int64_t{64} << 20);
    kv::KvStoreOptions ledger_options = Options(cpu_);
    ledger_options.transport = &world.loopback.transport(0);
    auto pools = kv::MakePoolLedger(ledger_options);
    ASSERT_TRUE(pools.ok()) << pools.status();
    kv::KvStoreOptions options = Options(cpu_);
    options.transport = &world.loopback.transport(0);
    options.placement = placement;
    options.mode = cluster::ExecMode::kDelegate;
    options.pools = *pools;
    auto a = kv::KvStore::Create(options);
    auto b = kv::KvStore::Create(options);
    auto reference_b = kv::KvStore::Create(Options(cpu_));
    ASSERT_TRUE(a.ok() && b.ok() && reference_b.ok());
    std::vector<float> logits_a, logits_b, want_b;
    for (size_t begin = 0; begin < prompt_->size(); begin += kChunk) {
      const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
      ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(begin, n), **a, &logits_a).ok());
      ASSERT_TRUE(llm_->Forward(std::span(other).subspan(begin, n), **b, &logits_b).ok());
      ASSERT_TRUE(llm_->Forward(std::span(other).subspan(begin, n), **reference_b, &want_b).ok());
    }
    EXPECT_LT(RelL2(logits_a, reference_->prompt_logits), 1e-5);
    EXPECT_LT(RelL2(logits_b, want_b), 1e-5);
    // Both sequences' blocks are in the pools at once, in distinct slots.
    EXPECT_GT((*pools)->used_bytes(1), 0);
    const int64_t keep = kPrompt - 50;  // inside the last sealed block
    ASSERT_TRUE((*a)->Truncate(keep).ok());
    ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(keep), **a, &logits_a).ok());
    EXPECT_LT(RelL2(logits_a, reference_->prompt_logits), 1e-5) << PlacementName(placement);
    const int64_t used = (*pools)->used_bytes(1) + (*pools)->used_bytes(2);
    a->reset();
    EXPECT_LT((*pools)->used_bytes(1) + (*pools)->used_bytes(2), used);  // a's slots freed
  }
}

// Flips one byte at `offset` of `path`.
void FlipByte(const std::string& path, int64_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(offset);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x5a);
  file.seekp(offset);
  file.write(&byte, 1);
}

TEST_F(DistributedTest, DiskTierKeepsEveryPathExact) {
  // Host budgets of a few blocks: most of the KV (~200 blocks) goes to disk.
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int64_t block = BlockBytes();
  const kv::DiskTierOptions disk{dir.path(), 512 * block};
  auto sim = device::MakeSimDevice({int64_t{1} << 20, 0.0}, pool_);
  ASSERT_TRUE(sim.ok()) << sim.status();
  for (device::Device* device : {cpu_, sim->get()}) {
    kv::KvStoreOptions options = Options(device);
    options.disk = disk;
    if (device == cpu_) {
      options.host_budget_bytes = 60 * block;  // 39 for tails and open blocks, 21 sealed
    } else {
      options.device_budget_bytes = int64_t{1} << 20;
      options.host_budget_bytes = 20 * block;
    }
    absl::StatusOr<RunResult> run = Generate(options);
    ASSERT_TRUE(run.ok()) << device->name() << ": " << run.status();
    EXPECT_EQ(run->tokens, reference_->tokens) << device->name();
    EXPECT_LT(RelL2(run->prompt_logits, reference_->prompt_logits), 1e-5) << device->name();
    EXPECT_GT(run->stats.disk_bytes_read, 0) << device->name();
  }
  // Three ranks with small pools and disks: every placement and mode.
  for (cluster::PlacementPolicy placement :
       {cluster::PlacementPolicy::kHeadMajor, cluster::PlacementPolicy::kStriped}) {
    for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
      const std::string where =
          absl::StrCat(cluster::PlacementName(placement), ", ", cluster::ExecModeName(mode));
      World world(3, 8 * block, disk);
      kv::KvStoreOptions options = Options(cpu_);
      options.transport = &world.loopback.transport(0);
      options.placement = placement;
      options.mode = mode;
      options.host_budget_bytes = 50 * block;
      options.disk = disk;
      options.costs.ranks.resize(3);
      for (cluster::RankProbe& probe : options.costs.ranks) probe.disk_bytes = disk.bytes;
      absl::StatusOr<RunResult> run = Generate(options);
      ASSERT_TRUE(run.ok()) << where << ": " << run.status();
      EXPECT_EQ(run->tokens, reference_->tokens) << where;
      EXPECT_LT(RelL2(run->prompt_logits, reference_->prompt_logits), 1e-5) << where;
      EXPECT_GT(
          world.ranks[0]->stats().disk_bytes_written + world.ranks[1]->stats().disk_bytes_written,
          0)
          << where;
      if (mode == cluster::ExecMode::kPull) {
        EXPECT_GT(run->stats.bytes_fetched, 0) << where;  // disk blocks shipped here
      } else {
        EXPECT_EQ(run->stats.bytes_fetched, 0) << where;  // attended where they are stored
        EXPECT_GT(world.ranks[0]->stats().kv_bytes_attended, 0) << where;
      }
    }
  }
}

TEST_F(DistributedTest, TruncatingIntoADiskBlockReadsItBack) {
  TempDir dir;
  const int64_t block = BlockBytes();
  for (int size : {1, 3}) {
    World world(size, 4 * block, {dir.path(), 512 * block});
    const kv::KvStoreOptions options = DiskOptions(world, size, 45, {dir.path(), 512 * block});
    auto store = kv::KvStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<float> logits;
    for (size_t begin = 0; begin < prompt_->size(); begin += kChunk) {
      const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
      ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(begin, n), **store, &logits).ok());
    }
    EXPECT_GT((*store)->placement()->used_bytes(0, cluster::PoolTier::kDisk) +
                  (size > 1 ? (*store)->placement()->used_bytes(1, cluster::PoolTier::kDisk) : 0),
              0);
    // Position 40 is in block 1: among the first blocks moved to a disk.
    const int64_t keep = 40;
    ASSERT_EQ((*store)->Home(0, 0, 1).tier, cluster::PoolTier::kDisk) << size;
    ASSERT_TRUE((*store)->Truncate(keep).ok()) << size;
    for (size_t begin = keep; begin < prompt_->size(); begin += kChunk) {
      const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
      absl::Status s = llm_->Forward(std::span(*prompt_).subspan(begin, n), **store, &logits);
      ASSERT_TRUE(s.ok()) << s;
    }
    EXPECT_LT(RelL2(logits, reference_->prompt_logits), 1e-5) << size << " ranks";
  }
}

TEST_F(DistributedTest, ACorruptDiskBlockIsDataLossNamingIt) {
  const int64_t block = BlockBytes();
  for (int size : {1, 2}) {
    TempDir dir;
    World world(size, 4 * block, {dir.path(), 512 * block});
    kv::KvStoreOptions options = DiskOptions(world, size, 45, {dir.path(), 512 * block});
    options.mode = cluster::ExecMode::kDelegate;
    auto store = kv::KvStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<float> logits;
    ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(0, kChunk), **store, &logits).ok());
    // Disk slot 0 of the rank holding blocks on disk: its first file, offset 0.
    const int rank = size - 1;
    const std::vector<std::string> files = dir.Files(rank);
    ASSERT_FALSE(files.empty()) << size;
    FlipByte(files[0], 100);
    absl::Status s = llm_->Forward(std::span(*prompt_).subspan(kChunk, kChunk), **store, &logits);
    ASSERT_FALSE(s.ok()) << size;
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("rank ", rank))) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("layer ")) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("kv head ")) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(files[0])) << s;
  }
}

TEST_F(DistributedTest, AFullDiskIsResourceExhaustedWithTheNumbers) {
  TempDir dir;
  const int64_t block = BlockBytes();
  kv::KvStoreOptions options = Options(cpu_);
  options.host_budget_bytes = 45 * block;
  options.disk = {dir.path(), 16 * block};
  absl::StatusOr<RunResult> run = Generate(options);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kResourceExhausted) << run.status();
  EXPECT_THAT(std::string(run.status().message()), HasSubstr("65536 bytes of 65536 bytes disk"));
}

TEST_F(DistributedTest, ASnapshotRestoresTheSequenceWhereItWasSaved) {
  const int64_t block = BlockBytes();
  for (int size : {1, 3}) {
    TempDir dir;
    const std::string snapshot = dir.path() + "/session";
    const kv::DiskTierOptions disk{dir.path(), 512 * block};
    auto options_for = [&](World& world) {
      kv::KvStoreOptions options = DiskOptions(world, size, 50, disk);
      options.mode = cluster::ExecMode::kDelegate;
      return options;
    };
    std::vector<kv::SnapshotBlock> table;
    {
      World world(size, 6 * block, disk);
      auto store = kv::KvStore::Create(options_for(world));
      ASSERT_TRUE(store.ok()) << store.status();
      std::vector<float> logits;
      for (size_t begin = 0; begin < prompt_->size(); begin += kChunk) {
        const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
        ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(begin, n), **store, &logits).ok());
      }
      absl::StatusOr<std::vector<kv::SnapshotBlock>> saved = (*store)->Save(snapshot);
      ASSERT_TRUE(saved.ok()) << saved.status();
      table = std::move(*saved);
    }
    // A new cluster (fresh pools and disks): the sequence continues exactly.
    World world(size, 6 * block, disk);
    auto store = kv::KvStore::Create(options_for(world));
    ASSERT_TRUE(store.ok());
    absl::Status loaded = (*store)->Load(snapshot, table, kPrompt);
    ASSERT_TRUE(loaded.ok()) << loaded;
    std::vector<float> logits;
    for (int i = 0; i + 1 < kNew; ++i) {
      const int32_t token = reference_->tokens[i];
      ASSERT_TRUE(llm_->Forward(std::span<const int32_t>(&token, 1), **store, &logits).ok());
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      EXPECT_EQ(next, reference_->tokens[i + 1]) << size << " ranks, step " << i;
    }
    // A corrupt block file is named; a table of another world does not fit.
    const std::string file = kv::SnapshotFile(snapshot, size - 1);
    FlipByte(file, static_cast<int64_t>(std::filesystem::file_size(file)) - 100);  // in a block
    World again(size, 6 * block, disk);
    auto corrupt = kv::KvStore::Create(options_for(again));
    ASSERT_TRUE(corrupt.ok());
    absl::Status s = (*corrupt)->Load(snapshot, table, kPrompt);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(kv::SnapshotFile(snapshot, size - 1))) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("layer ")) << s;
    if (size > 1) {
      kv::KvStoreOptions one = Options(cpu_);
      auto single = kv::KvStore::Create(one);
      ASSERT_TRUE(single.ok());
      EXPECT_EQ((*single)->Load(snapshot, table, kPrompt).code(),
                absl::StatusCode::kFailedPrecondition);
    }
  }
}

TEST_F(DistributedTest, MemoryRankRejectsOffsetsOutsideItsPool) {
  comm::LoopbackWorld world({0, 4096});
  MemoryRank rank(world.transport(1), *cpu_);
  DelegateRequest request;
  request.head_dim = 16;
  request.group_size = 2;
  request.block_tokens = 32;
  request.scale = 0.25f;
  request.n_rows = 1;
  request.q_pos = {40};
  request.heads = {0};
  request.blocks = {{{4096 - 64, 32, 0, 0, {}}}};  // runs past the pool's end
  request.q.assign(32, 0.5f);
  absl::StatusOr<comm::CallReply> reply = rank.Handle(EncodeDelegate(request));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(reply.status().message()), HasSubstr("offset 4032"));
  std::vector<std::byte> truncated = EncodeDelegate(request);
  truncated.resize(truncated.size() - 5);
  EXPECT_EQ(rank.Handle(truncated).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace headwise::attention
