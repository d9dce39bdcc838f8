// Key bounds on fresh random blocks: the bound is never below a key's score
// (in every KV dtype), equals it for a one-token block, and ranks a block
// holding a key aligned with the query above blocks of noise.
#include "kernels/key_summary.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace headwise::kernels {
namespace {

TEST(KeySummaryTest, TheBoundIsNeverBelowAScore) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> value(0.0f, 1.0f);
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16}) {
    const int32_t dim = 64, tokens = 48;
    std::vector<float> keys(tokens * dim), q(dim), round(tokens * dim), mn(dim), mx(dim);
    for (float& v : keys) v = value(rng);
    std::vector<uint8_t> stored(keys.size() * KvDtypeSize(dtype));
    ToKvDtype(dtype, keys.data(), stored.data(), int64_t(keys.size()));
    FromKvDtype(dtype, stored.data(), round.data(), int64_t(keys.size()));
    KeyBounds(dtype, stored.data(), tokens, dim, mn.data(), mx.data());
    for (int trial = 0; trial < 20; ++trial) {
      for (float& v : q) v = value(rng);
      const float bound = KeyBoundScore(q.data(), mn.data(), mx.data(), dim);
      for (int32_t t = 0; t < tokens; ++t) {
        float score = 0;
        for (int32_t i = 0; i < dim; ++i) score += q[i] * round[t * dim + i];
        EXPECT_LE(score, bound + 1e-4f) << KvDtypeName(dtype) << " token " << t;
      }
    }
    // One token: the bound is its score.
    KeyBounds(dtype, stored.data(), 1, dim, mn.data(), mx.data());
    float score = 0;
    for (int32_t i = 0; i < dim; ++i) score += q[i] * round[i];
    EXPECT_NEAR(KeyBoundScore(q.data(), mn.data(), mx.data(), dim), score, 1e-4f);
  }
}

TEST(KeySummaryTest, ABlockWithTheQuerysKeyRanksFirst) {
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  const int32_t dim = 32, tokens = 16;
  std::vector<float> q(dim), mn(dim), mx(dim);
  for (float& v : q) v = noise(rng) * 10;
  float best = -1e30f;
  int best_block = -1;
  for (int b = 0; b < 8; ++b) {
    std::vector<float> keys(tokens * dim);
    for (float& v : keys) v = noise(rng);
    if (b == 5) {
      for (int32_t i = 0; i < dim; ++i) keys[3 * dim + i] = q[i];  // the needle
    }
    KeyBounds(KvDtype::kF32, keys.data(), tokens, dim, mn.data(), mx.data());
    const float bound = KeyBoundScore(q.data(), mn.data(), mx.data(), dim);
    if (bound > best) best = bound, best_block = b;
  }
  EXPECT_EQ(best_block, 5);
}

}  // namespace
}  // namespace headwise::kernels
