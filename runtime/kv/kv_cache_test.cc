#include "runtime/kv/kv_cache.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace headwise::kv {
namespace {

KvGeometry Small(kernels::KvDtype dtype) {
  return KvGeometry{/*n_layers=*/2, /*n_kv_heads=*/3, /*head_dim=*/8, /*block_tokens=*/5, dtype};
}

TEST(KvCacheTest, AppendsIntoBlocksAndViewsEveryToken) {
  KvCache cache(Small(kernels::KvDtype::kF32));
  const int64_t row = 3 * 8;
  std::vector<float> k(12 * row), v(12 * row);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<float>(i);
    v[i] = -static_cast<float>(i);
  }
  cache.Append(0, k.data(), v.data(), 7, row);
  cache.Append(0, k.data() + 7 * row, v.data() + 7 * row, 5, row);
  EXPECT_EQ(cache.n_tokens(0), 12);
  EXPECT_EQ(cache.length(), 0);  // layer 1 is still empty

  std::vector<kernels::KvBlockView> views;
  ASSERT_EQ(cache.Views(0, views), 3);  // 5 + 5 + 2
  ASSERT_EQ(views.size(), 9u);
  for (int h = 0; h < 3; ++h) {
    for (int b = 0; b < 3; ++b) {
      const auto& view = views[h * 3 + b];
      EXPECT_EQ(view.first_pos, b * 5);
      EXPECT_EQ(view.n_tokens, b < 2 ? 5 : 2);
      for (int t = 0; t < view.n_tokens; ++t) {
        const int pos = b * 5 + t;
        for (int d = 0; d < 8; ++d) {
          ASSERT_EQ(static_cast<const float*>(view.k)[t * 8 + d], k[pos * row + h * 8 + d]);
          ASSERT_EQ(static_cast<const float*>(view.v)[t * 8 + d], v[pos * row + h * 8 + d]);
        }
      }
    }
  }
  EXPECT_EQ(cache.allocated_bytes(), 3 * 3 * Small(kernels::KvDtype::kF32).BlockBytes());
}

TEST(KvCacheTest, TruncateDropsTokensAndBlocks) {
  KvCache cache(Small(kernels::KvDtype::kBF16));
  std::vector<float> k(11 * 24, 1.5f), v(11 * 24, -2.0f);
  for (int layer = 0; layer < 2; ++layer) cache.Append(layer, k.data(), v.data(), 11, 24);
  EXPECT_EQ(cache.length(), 11);
  cache.Truncate(6);
  EXPECT_EQ(cache.length(), 6);
  std::vector<kernels::KvBlockView> views;
  ASSERT_EQ(cache.Views(1, views), 2);
  EXPECT_EQ(views[1].n_tokens, 1);
  cache.Append(1, k.data(), v.data(), 4, 24);
  EXPECT_EQ(cache.n_tokens(1), 10);
  ASSERT_EQ(cache.Views(1, views), 2);
  EXPECT_EQ(views[1].n_tokens, 5);
  float out[8];
  kernels::FromKvDtype(kernels::KvDtype::kBF16, views[1].k, out, 8);
  EXPECT_EQ(out[0], 1.5f);  // exactly representable in bf16
}

}  // namespace
}  // namespace headwise::kv
