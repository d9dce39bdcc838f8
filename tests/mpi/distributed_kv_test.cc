// The distributed KV path between real MPI ranks over the UCX transport: a
// synthetic Llama-shaped model (made here, identical on every rank) is
// prefilled in chunks and decoded greedily on rank 0 with its KV placed on
// every rank, for each placement x execution mode; the tokens and logits
// must equal rank 0's single-process all-resident run. Memory ranks serve
// with MemoryRank until rank 0 stops them. ctest runs it at 1-4 ranks and
// with UCX_TLS unset, tcp only and shared memory only.
#include <mpi.h>

#include <algorithm>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
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

  const std::vector<std::pair<cluster::PlacementPolicy, cluster::ExecMode>> runs = {
      {cluster::PlacementPolicy::kHeadMajor, cluster::ExecMode::kPull},
      {cluster::PlacementPolicy::kHeadMajor, cluster::ExecMode::kDelegate},
      {cluster::PlacementPolicy::kStriped, cluster::ExecMode::kPull},
      {cluster::PlacementPolicy::kStriped, cluster::ExecMode::kDelegate},
  };
  runtime::ThreadPool pool(1);
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(&pool);
  if (Rank() != 0) {
    for (size_t i = 0; i < runs.size(); ++i) {
      attention::MemoryRank rank(**transport, *cpu);
      absl::Status served = rank.Serve();
      EXPECT_TRUE(served.ok()) << served;
    }
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

  for (const auto& [placement, mode] : runs) {
    const std::string where =
        absl::StrCat(testing::Size(), " ranks, ", cluster::PlacementName(placement), ", ",
                     cluster::ExecModeName(mode));
    kv::KvStoreOptions distributed = options;
    distributed.transport = transport->get();
    distributed.placement = placement;
    distributed.mode = mode;
    absl::StatusOr<RunResult> run = Generate(**llm, distributed, prompt);
    EXPECT_TRUE(run.ok()) << where << ": " << run.status();
    if (run.ok()) {
      EXPECT_EQ(run->tokens, reference->tokens) << where;
      EXPECT_LT(headwise::testing::RelL2(run->prompt_logits, reference->prompt_logits), 1e-4)
          << where;
    }
    absl::StatusOr<std::vector<attention::MemoryRankStats>> stats =
        attention::CollectMemoryRankStats(**transport);
    ASSERT_TRUE(stats.ok()) << stats.status();
    for (int r = 1; r < testing::Size(); ++r) {
      EXPECT_EQ((*stats)[r].kv_bytes_attended > 0, mode == cluster::ExecMode::kDelegate)
          << where << " rank " << r;
    }
    absl::Status stopped = attention::StopMemoryRanks(**transport);
    ASSERT_TRUE(stopped.ok()) << stopped;
  }
}

}  // namespace
}  // namespace headwise
