// Attention over a long context streamed through a small device: a synthetic
// 2-layer Llama-shaped model with 256K tokens of KV and a 16 MiB device
// budget decodes to the same logits as the all-resident cpu run, while the
// device never exceeds its budget and the host holds the rest.
#include "runtime/attention/attend.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"
#include "tests/util/numerics.h"

namespace headwise::attention {
namespace {

using ::headwise::testing::RelL2;

TEST(AttendLongContextTest, Streams256KTokensThrough16MiB) {
  runtime::ThreadPool pool(2);
  const std::vector<uint8_t> image = model::testing::BuildSyntheticModel({});
  auto file = model::GgufFile::FromBuffer(image.data(), image.size(), "synthetic.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto llm = model::LlamaModel::FromGguf(std::move(*file), &pool);
  ASSERT_TRUE(llm.ok()) << llm.status();

  constexpr int64_t kContext = 256 * 1024, kChunk = 4096, kBudget = int64_t{16} << 20;
  const kv::KvGeometry geometry = (*llm)->KvGeometryFor(256, kernels::KvDtype::kF32);
  auto cpu = device::MakeCpuDevice(&pool);
  auto sim = device::MakeSimDevice({kBudget, 0.0}, &pool);
  ASSERT_TRUE(sim.ok()) << sim.status();
  auto make = [&](device::Device* device, int64_t budget) {
    kv::KvStoreOptions options;
    options.geometry = geometry;
    options.device = device;
    options.device_budget_bytes = budget;
    options.capacity_tokens = kContext + 8;
    options.max_append_tokens = kChunk;
    return kv::KvStore::Create(options);
  };
  auto resident = make(cpu.get(), 0);
  auto streamed = make(sim->get(), kBudget);
  ASSERT_TRUE(resident.ok()) << resident.status();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_EQ((*streamed)->mode(), kv::KvMode::kStreaming);

  // The prefill's KV path (open blocks on the device, sealed and sent home
  // chunk by chunk) with random K/V: attending 256K tokens causally on a CPU
  // would take hours and adds nothing the decode steps below do not check.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t row = int64_t(geometry.n_kv_heads) * geometry.head_dim;
  std::vector<float> k(kChunk * row), v(kChunk * row);
  for (int64_t done = 0; done < kContext; done += kChunk) {
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    for (int32_t layer = 0; layer < geometry.n_layers; ++layer) {
      for (auto* store : {resident->get(), streamed->get()}) {
        ASSERT_TRUE(store->Append(layer, k.data(), v.data(), kChunk, row).ok());
        ASSERT_TRUE(store->Seal(layer).ok());
      }
    }
  }
  ASSERT_EQ((*streamed)->length(), kContext);

  StreamStats stats;
  std::vector<float> want, got;
  for (int32_t token : {3, 17, 42}) {
    ASSERT_TRUE((*llm)->Forward(std::span<const int32_t>(&token, 1), **resident, &want).ok());
    ASSERT_TRUE(
        (*llm)
            ->Forward(std::span<const int32_t>(&token, 1), **streamed, &got, nullptr, &stats)
            .ok());
    EXPECT_LT(RelL2(got, want), 1e-4) << "token " << token;
  }
  const int64_t kv_bytes = geometry.TokenBytes() * (kContext + 3);
  EXPECT_LE((*sim)->memory_stats().peak_bytes, kBudget);
  EXPECT_LE((*streamed)->tier_stats(kv::Tier::kDevice).peak_bytes, kBudget);
  EXPECT_GE((*streamed)->tier_stats(kv::Tier::kHost).used_bytes, kv_bytes - kBudget);
  // One head holds 32 MiB of KV per layer: more than a staging buffer, so a
  // head streams in block ranges.
  EXPECT_EQ(stats.head_group_size, 1);
  EXPECT_GT(stats.items, 3 * 2 * 2);
}

}  // namespace
}  // namespace headwise::attention
