// The KV store on every device: blocks fill and seal in order; in streaming
// mode sealed blocks go home to the host and the device holds only tails,
// open blocks and staging, within its budget; truncation brings a cut tail
// back; budgets give ResourceExhausted with the numbers.
#include "runtime/kv/kv_store.h"

#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::kv {
namespace {

using ::testing::HasSubstr;

KvGeometry Small(kernels::KvDtype dtype) {
  return KvGeometry{/*n_layers=*/2, /*n_kv_heads=*/3, /*head_dim=*/8, /*block_tokens=*/5, dtype};
}

std::vector<float> Ramp(int64_t n, float sign) {
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = sign * static_cast<float>(i % 997);
  return x;
}

// The K or V value the store must hold for (head, position, dim).
float Expected(int pos, int h, int d, float sign) {
  return sign * static_cast<float>((pos * 24 + h * 8 + d) % 997);
}

void CheckBlock(KvStore& store, int layer, int h, int b, int tokens) {
  absl::StatusOr<const uint8_t*> data =
      b < store.n_sealed(layer) ? store.SealedBlockData(layer, h, b) : nullptr;
  std::vector<kernels::KvBlockView> views;
  const kernels::KvBlockView* view = nullptr;
  if (b >= store.n_sealed(layer) || store.mode() == KvMode::kResident) {
    store.Views(layer, b, b + 1, views);
    view = &views[h];
  }
  const float* k =
      view != nullptr ? static_cast<const float*>(view->k) : reinterpret_cast<const float*>(*data);
  const float* v = view != nullptr ? static_cast<const float*>(view->v) : k + 5 * 8;
  ASSERT_EQ(store.BlockTokens(layer, b), tokens);
  for (int t = 0; t < tokens; ++t) {
    for (int d = 0; d < 8; ++d) {
      ASSERT_EQ(k[t * 8 + d], Expected(b * 5 + t, h, d, 1)) << "b " << b << " t " << t;
      ASSERT_EQ(v[t * 8 + d], Expected(b * 5 + t, h, d, -1)) << "b " << b << " t " << t;
    }
  }
}

struct DeviceCase {
  const char* name;
  bool sim;
  int64_t budget_blocks;  // sim arena in blocks; 0 for cpu
};

class KvStoreTest : public ::testing::TestWithParam<DeviceCase> {
 protected:
  void SetUp() override {
    const int64_t block = Small(kernels::KvDtype::kF32).BlockBytes();
    budget_ = GetParam().budget_blocks * block;
    if (GetParam().sim) {
      auto sim = device::MakeSimDevice({budget_, 0.0}, nullptr);
      ASSERT_TRUE(sim.ok()) << sim.status();
      device_ = std::move(*sim);
    } else {
      device_ = device::MakeCpuDevice(nullptr);
    }
  }
  absl::StatusOr<std::unique_ptr<KvStore>> Make(int64_t capacity, int32_t max_append) {
    KvStoreOptions options;
    options.geometry = Small(kernels::KvDtype::kF32);
    options.device = device_.get();
    options.device_budget_bytes = budget_;
    options.capacity_tokens = capacity;
    options.max_append_tokens = max_append;
    return KvStore::Create(options);
  }
  std::unique_ptr<device::Device> device_;
  int64_t budget_ = 0;
};

TEST_P(KvStoreTest, AppendSealAndReadBack) {
  auto store = Make(/*capacity=*/40, /*max_append=*/7);
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t row = 3 * 8;
  std::vector<float> k = Ramp(40 * row, 1), v = Ramp(40 * row, -1);
  int64_t done = 0;
  for (int64_t n : {7, 1, 1, 5, 7, 3}) {
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(
          (*store)->Append(layer, k.data() + done * row, v.data() + done * row, n, row).ok());
      ASSERT_TRUE((*store)->Seal(layer).ok());
    }
    done += n;
  }
  EXPECT_EQ((*store)->length(), 24);
  EXPECT_EQ((*store)->n_blocks(1), 5);
  EXPECT_EQ((*store)->n_sealed(1), 4);
  for (int h = 0; h < 3; ++h) {
    for (int b = 0; b < 5; ++b) CheckBlock(**store, 1, h, b, b < 4 ? 5 : 4);
  }
  const TierStats device_tier = (*store)->tier_stats(Tier::kDevice);
  if (GetParam().sim) {
    EXPECT_LE(device_->memory_stats().peak_bytes, budget_);
  }
  if ((*store)->mode() == KvMode::kStreaming) {
    EXPECT_EQ((*store)->BlockTier(1, 0, 0), Tier::kHost);
    EXPECT_EQ((*store)->BlockTier(1, 0, 4), Tier::kDevice);
    EXPECT_GT((*store)->tier_stats(Tier::kHost).peak_bytes, 0);
    EXPECT_LE(device_tier.peak_bytes, budget_);
  }
}

TEST_P(KvStoreTest, TruncateBringsTheCutTailBack) {
  auto store = Make(40, 12);
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t row = 24;
  std::vector<float> k = Ramp(40 * row, 1), v = Ramp(40 * row, -1);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE((*store)->Append(layer, k.data(), v.data(), 12, row).ok());
    ASSERT_TRUE((*store)->Seal(layer).ok());
  }
  ASSERT_TRUE((*store)->Truncate(7).ok());
  EXPECT_EQ((*store)->length(), 7);
  EXPECT_EQ((*store)->n_sealed(0), 1);
  EXPECT_EQ((*store)->BlockTier(0, 2, 1),
            (*store)->mode() == KvMode::kStreaming ? Tier::kDevice : (*store)->BlockTier(0, 2, 0));
  // Append again after the cut: positions continue at 7.
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE((*store)->Append(layer, k.data() + 7 * row, v.data() + 7 * row, 6, row).ok());
    ASSERT_TRUE((*store)->Seal(layer).ok());
  }
  for (int h = 0; h < 3; ++h) {
    for (int b = 0; b < 3; ++b) CheckBlock(**store, 0, h, b, b < 2 ? 5 : 3);
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, KvStoreTest,
                         ::testing::Values(DeviceCase{"cpu", false, 0},
                                           DeviceCase{"sim_resident", true, 64},
                                           DeviceCase{"sim_streaming", true, 6 + 2 * 3 * 3 + 2}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(KvStoreErrorsTest, DeviceBudgetTooSmallNamesTheNeed) {
  auto sim = device::MakeSimDevice({4096, 0.0}, nullptr);
  ASSERT_TRUE(sim.ok());
  KvStoreOptions options;
  options.geometry = Small(kernels::KvDtype::kF32);
  options.device = sim->get();
  options.device_budget_bytes = 4096;
  options.capacity_tokens = 1000;
  options.max_append_tokens = 16;
  auto store = KvStore::Create(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("too small for even one head group: need 10.0 KiB"));
}

TEST(KvStoreErrorsTest, HostPoolFullIsResourceExhausted) {
  auto cpu = device::MakeCpuDevice(nullptr);
  KvStoreOptions options;
  options.geometry = Small(kernels::KvDtype::kF32);
  options.device = cpu.get();
  options.host_budget_bytes = 4 * options.geometry.BlockBytes();
  options.capacity_tokens = 100;
  auto store = KvStore::Create(options);
  ASSERT_TRUE(store.ok());
  std::vector<float> k(10 * 24, 1.0f);
  absl::Status status = (*store)->Append(0, k.data(), k.data(), 10, 24);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("host KV pool full"));
}

}  // namespace
}  // namespace headwise::kv
