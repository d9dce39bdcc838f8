// The cuda device under the HeadInfer executor: a synthetic Llama-shaped model
// whose KV lives in HBM (resident) or streams from host memory through HBM
// staging buffers (a budget far below the KV) gives the cpu device's logits,
// and the device never exceeds its budget. Skips without a GPU.
#include <random>

#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/util/numerics.h"

namespace headwise {
namespace {

using ::headwise::testing::RelL2;

std::vector<float> Logits(model::LlamaModel& llm, device::Device& device, int64_t budget,
                          const std::vector<int32_t>& prompt, int chunk, int block,
                          kernels::KvDtype dtype, kv::KvMode* mode) {
  kv::KvStoreOptions options;
  options.geometry = llm.KvGeometryFor(block, dtype);
  options.device = &device;
  options.device_budget_bytes = budget;
  options.capacity_tokens = static_cast<int64_t>(prompt.size()) + 4;
  options.max_append_tokens = chunk;
  auto store = kv::KvStore::Create(options);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return {};
  *mode = (*store)->mode();
  std::vector<float> all, part;
  for (size_t b = 0; b < prompt.size(); b += chunk) {
    const size_t n = std::min<size_t>(chunk, prompt.size() - b);
    absl::Status s =
        llm.Forward(std::span<const int32_t>(prompt).subspan(b, n), **store, nullptr, &part);
    EXPECT_TRUE(s.ok()) << s;
    all.insert(all.end(), part.begin(), part.end());
  }
  int32_t token = 5;  // one decode step over the streamed context too
  EXPECT_TRUE(llm.Forward(std::span<const int32_t>(&token, 1), **store, &part).ok());
  all.insert(all.end(), part.begin(), part.end());
  return all;
}

TEST(CudaOffloadTest, ResidentAndStreamedMatchCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  runtime::ThreadPool pool(0);
  model::testing::SyntheticModelSpec spec;
  spec.n_embd = 256;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;  // head_dim 64: the kernel's fast path
  const std::vector<uint8_t> image = model::testing::BuildSyntheticModel(spec);
  auto file = model::GgufFile::FromBuffer(image.data(), image.size(), "synthetic.gguf");
  ASSERT_TRUE(file.ok());
  auto llm = model::LlamaModel::FromGguf(std::move(*file), &pool);
  ASSERT_TRUE(llm.ok()) << llm.status();

  std::vector<int32_t> prompt(700);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = (i * 37 + 11) % spec.vocab;
  auto cpu = device::MakeCpuDevice(&pool);
  for (auto dtype : {kernels::KvDtype::kF32, kernels::KvDtype::kF16, kernels::KvDtype::kBF16}) {
    SCOPED_TRACE("kv dtype " + std::string(kernels::KvDtypeName(dtype)));
    kv::KvMode mode;
    const std::vector<float> want = Logits(**llm, *cpu, 0, prompt, 128, 32, dtype, &mode);
    const kv::KvGeometry g = (*llm)->KvGeometryFor(32, dtype);
    // Tails + two layers' open blocks for a 128-token chunk + 2 x 4 staging blocks.
    const int64_t small = g.BlockBytes() * (int64_t(g.n_layers) * g.n_kv_heads +
                                            2 * g.n_kv_heads * (128 / 32 + 1) + 8);
    for (int64_t budget : {int64_t{256} << 20, small}) {
      auto cuda = device::MakeCudaDevice({budget, 0});
      ASSERT_TRUE(cuda.ok()) << cuda.status();
      const std::vector<float> got = Logits(**llm, **cuda, budget, prompt, 128, 32, dtype, &mode);
      EXPECT_EQ(mode, budget == small ? kv::KvMode::kStreaming : kv::KvMode::kResident);
      EXPECT_LT(RelL2(got, want), 1e-4) << "budget " << budget;
      EXPECT_LE((*cuda)->memory_stats().peak_bytes, budget);
      if (budget == small) {
        EXPECT_GT((*cuda)->copy_stats().bytes_to_device, 0);
      }
    }
  }
}

TEST(CudaOffloadTest, BudgetAndBadCopiesAreErrors) {
  HEADWISE_SKIP_WITHOUT_GPU();
  auto cuda = device::MakeCudaDevice({1 << 20, 0});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_EQ((*cuda)->Allocate(2 << 20).status().code(), absl::StatusCode::kResourceExhausted);
  auto buffer = (*cuda)->Allocate(4096);
  ASSERT_TRUE(buffer.ok());
  std::vector<uint8_t> host(8192, 7), back(4096, 0);
  // Past the end of the allocation: rejected, nothing copied.
  EXPECT_EQ((*cuda)
                ->PostCopy(device::CopyDirection::kToDevice, {{buffer->data(), host.data(), 8192}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto up =
      (*cuda)->PostCopy(device::CopyDirection::kToDevice, {{buffer->data(), host.data(), 4096}});
  ASSERT_TRUE(up.ok());
  auto down =
      (*cuda)->PostCopy(device::CopyDirection::kToHost, {{back.data(), buffer->data(), 4096}});
  ASSERT_TRUE(down.ok());
  ASSERT_TRUE((*cuda)->Wait(*down).ok());
  EXPECT_TRUE((*cuda)->Poll(*up));
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 7));
  EXPECT_EQ((*cuda)->Wait(12345).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace headwise
