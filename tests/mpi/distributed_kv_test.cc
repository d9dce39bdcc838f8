// The distributed KV path between real MPI ranks over the UCX transport: a
// synthetic Llama-shaped model (made here, identical on every rank) is
// prefilled in chunks and decoded greedily on rank 0 with its KV placed on
// every rank, for each placement x execution mode; the tokens and logits
// must equal rank 0's single-process all-resident run. Memory ranks serve
// with MemoryRank until rank 0 stops them. Then, over the same UCX
// transport: a disk tier on every rank with pools too small for the KV
// (near-storage and fetch), a FaultyTransport delaying every op to rank 1
// (same result) and one failing them (UNAVAILABLE naming rank 1). ctest
// runs it at 1-4 ranks and with UCX_TLS unset, tcp only and shared memory only.
#include <mpi.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/loopback_transport.h"
#include "comm/ucx_transport.h"
#include "runtime/attention/attend.h"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/util/numerics.h"

namespace headwise {
namespace {

using headwise::testing::MpiTest;
using headwise::testing::Rank;

constexpr int32_t kBlock = 32, kChunk = 160, kPrompt = 700, kNew = 6;

struct RunResult {
  std::vector<float> prompt_logits;
  std::vector<int32_t> tokens;
};

absl::StatusOr<RunResult> Generate(model::LlamaModel& llm, const kv::KvStoreOptions& options,
                                   std::span<const int32_t> prompt) {
  absl::StatusOr<std::unique_ptr<kv::KvStore>> store = kv::KvStore::Create(options);
  if (!store.ok()) return store.status();
  RunResult run;
  std::vector<float> logits;
  for (size_t begin = 0; begin < prompt.size(); begin += kChunk) {
    const size_t n = std::min<size_t>(kChunk, prompt.size() - begin);
    if (absl::Status s = llm.Forward(prompt.subspan(begin, n), **store, &logits); !s.ok()) return s;
  }
  run.prompt_logits = logits;
  for (int i = 0; i < kNew; ++i) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    run.tokens.push_back(next);
    if (absl::Status s = llm.Forward(std::span<const int32_t>(&next, 1), **store, &logits);
        !s.ok()) {
      return s;
    }
  }
  return run;
}

class DistributedKvTest : public MpiTest {};

TEST_F(DistributedKvTest, EveryPlacementAndModeMatchesTheSingleProcessRun) {
  comm::UcxTransportOptions transport_options;
  transport_options.pool_bytes = int64_t{32} << 20;
  transport_options.peer_timeout = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<comm::UcxTransport>> transport =
      comm::UcxTransport::Create(MPI_COMM_WORLD, transport_options);
  ASSERT_TRUE(transport.ok()) << transport.status();

  enum class Fault { kNone, kDisk, kDelay, kFail };
  struct Run {
    cluster::PlacementPolicy placement;
    cluster::ExecMode mode;
    Fault fault = Fault::kNone;
  };
  using P = cluster::PlacementPolicy;
  using M = cluster::ExecMode;
  const std::vector<Run> runs = {
      {P::kHeadMajor, M::kPull},
      {P::kHeadMajor, M::kDelegate},
      {P::kStriped, M::kPull},
      {P::kStriped, M::kDelegate},
      {P::kStriped, M::kDelegate, Fault::kDisk},
      {P::kStriped, M::kPull, Fault::kDisk},
      {P::kHeadMajor, M::kDelegate, Fault::kDelay},
      {P::kHeadMajor, M::kDelegate, Fault::kFail},
  };
  // Every rank's disk tier in a directory of its own.
  std::string dir_pattern = ::testing::TempDir() + "headwise-mpi-disk-XXXXXX";
  ASSERT_NE(mkdtemp(dir_pattern.data()), nullptr);
  const kv::DiskTierOptions disk{dir_pattern, int64_t{16} << 20};
  runtime::ThreadPool pool(1);
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(&pool);
  if (Rank() != 0) {
    for (const Run& run : runs) {
      attention::MemoryRank rank(**transport, *cpu,
                                 run.fault == Fault::kDisk ? disk : kv::DiskTierOptions{});
      absl::Status served = rank.Serve();
      EXPECT_TRUE(served.ok()) << served;
    }
    std::filesystem::remove_all(disk.dir);
    return;
  }

  model::testing::SyntheticModelSpec spec;
  spec.n_layers = 3;
  spec.n_embd = 96;
  spec.n_heads = 6;
  spec.n_kv_heads = 3;
  const std::vector<uint8_t> image = model::testing::BuildSyntheticModel(spec);
  auto file = model::GgufFile::FromBuffer(image.data(), image.size(), "synthetic.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto llm = model::LlamaModel::FromGguf(std::move(*file), &pool);
  ASSERT_TRUE(llm.ok()) << llm.status();
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> token(0, 95);
  std::vector<int32_t> prompt(kPrompt);
  for (int32_t& t : prompt) t = token(rng);

  kv::KvStoreOptions options;
  options.geometry = (*llm)->KvGeometryFor(kBlock, kernels::KvDtype::kF32);
  options.device = cpu.get();
  options.capacity_tokens = kPrompt + kNew;
  options.max_append_tokens = kChunk;
  absl::StatusOr<RunResult> reference = Generate(**llm, options, prompt);
  ASSERT_TRUE(reference.ok()) << reference.status();

  const int64_t block = options.geometry.BlockBytes();
  for (const Run& r : runs) {
    const std::string where =
        absl::StrCat(testing::Size(), " ranks, ", cluster::PlacementName(r.placement), ", ",
                     cluster::ExecModeName(r.mode),
                     r.fault == Fault::kDisk    ? ", disk tiers"
                     : r.fault == Fault::kDelay ? ", ops to rank 1 delayed"
                     : r.fault == Fault::kFail  ? ", ops to rank 1 failing"
                                                : "");
    if (r.fault != Fault::kNone && testing::Size() < 2) continue;
    comm::FaultPlan plan;
    if (r.fault == Fault::kDelay) plan = {.rank = 1, .delay = absl::Microseconds(300)};
    if (r.fault == Fault::kFail) plan = {.rank = 1, .fail_after = 30};
    comm::FaultyTransport faulty(**transport, plan);
    kv::KvStoreOptions distributed = options;
    distributed.transport = &faulty;
    distributed.placement = r.placement;
    distributed.mode = r.mode;
    if (r.fault == Fault::kDisk) {
      // Ledger pools of a few blocks per rank (the transport's are 32 MiB):
      // most blocks go to the disks.
      distributed.disk = disk;
      std::vector<int64_t> host(testing::Size(), 8 * block), disks(testing::Size(), disk.bytes);
      host[0] = 0;
      auto ledger = cluster::PoolLedger::Create(block, host, disks);
      ASSERT_TRUE(ledger.ok()) << ledger.status();
      distributed.pools = *ledger;
    }
    absl::StatusOr<RunResult> run = Generate(**llm, distributed, prompt);
    if (r.fault == Fault::kFail) {
      EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable) << where << run.status();
      EXPECT_NE(run.status().message().find("rank 1"), std::string::npos) << run.status();
    } else {
      EXPECT_TRUE(run.ok()) << where << ": " << run.status();
      if (run.ok()) {
        EXPECT_EQ(run->tokens, reference->tokens) << where;
        EXPECT_LT(headwise::testing::RelL2(run->prompt_logits, reference->prompt_logits), 1e-4)
            << where;
      }
    }
    absl::StatusOr<std::vector<attention::MemoryRankStats>> stats =
        attention::CollectMemoryRankStats(**transport);
    ASSERT_TRUE(stats.ok()) << stats.status();
    for (int rank = 1; rank < testing::Size() && r.fault != Fault::kFail; ++rank) {
      EXPECT_EQ((*stats)[rank].kv_bytes_attended > 0, r.mode == cluster::ExecMode::kDelegate)
          << where << " rank " << rank;
      if (r.fault == Fault::kDisk) {
        EXPECT_GT((*stats)[rank].disk_bytes_written, 0) << where << " rank " << rank;
      }
    }
    absl::Status stopped = attention::StopMemoryRanks(**transport);
    ASSERT_TRUE(stopped.ok()) << stopped;
  }
  std::filesystem::remove_all(disk.dir);
}

}  // namespace
}  // namespace headwise
