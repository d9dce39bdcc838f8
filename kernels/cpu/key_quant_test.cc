// Key quantization against its contract on fresh random rows: the
// round-trip error bound (|x - x'| <= scale / 2 per value), scores equal to
// q . dequantized rows, exact constant groups, and bad formats named.
#include "kernels/key_quant.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace headwise::kernels {
namespace {

TEST(KeyQuantTest, RoundTripErrorIsAtMostHalfAStep) {
  std::mt19937 rng(std::random_device{}());
  const uint32_t seed = rng();
  SCOPED_TRACE(seed);
  rng.seed(seed);
  std::normal_distribution<float> value(0.0f, 2.0f);
  for (int32_t bits : {4, 2}) {
    for (int32_t group : {16, 32, 64}) {
      const KeyQuantFormat f{bits, group, 64};
      ASSERT_EQ(f.Error(), nullptr);
      const int64_t rows = 37;
      std::vector<float> x(rows * 64), back(rows * 64, NAN);
      for (float& v : x) v = value(rng);
      std::vector<uint8_t> codes(rows * f.CodeBytes(), 0xAA);
      std::vector<float> sz(rows * f.Groups() * 2, NAN);
      QuantizeKeys(f, x.data(), 64, rows, codes.data(), sz.data());
      DequantizeKeys(f, codes.data(), sz.data(), rows, back.data(), 64);
      double err2 = 0, x2 = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int32_t i = 0; i < 64; ++i) {
          const float scale = sz[2 * (r * f.Groups() + i / group)];
          const float err = std::fabs(x[r * 64 + i] - back[r * 64 + i]);
          ASSERT_LE(err, scale / 2 * (1 + 1e-5f) + 1e-6f)
              << bits << " bits, group " << group << ", row " << r << ", value " << i;
          err2 += double(err) * err;
          x2 += double(x[r * 64 + i]) * x[r * 64 + i];
        }
      }
      // Relative RMS error of Gaussian rows: a group spans ~5 sigma, a step
      // is that over 15 (int4) or 3 (int2) levels, the error ~step/sqrt(12):
      // ~0.1 and ~0.5.
      EXPECT_LT(std::sqrt(err2 / x2), bits == 4 ? 0.13 : 0.65) << bits << " bits, group " << group;
    }
  }
}

TEST(KeyQuantTest, ScoresEqualDotProductsWithDequantizedRows) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (int32_t bits : {4, 2}) {
    const KeyQuantFormat f{bits, 32, 128};
    const int64_t rows = 19;
    std::vector<float> x(rows * 128), q(128), back(rows * 128), scores(rows, NAN);
    for (float& v : x) v = value(rng);
    for (float& v : q) v = value(rng);
    std::vector<uint8_t> codes(rows * f.CodeBytes());
    std::vector<float> sz(rows * f.Groups() * 2);
    QuantizeKeys(f, x.data(), 128, rows, codes.data(), sz.data());
    DequantizeKeys(f, codes.data(), sz.data(), rows, back.data(), 128);
    QuantizedKeyScores(f, q.data(), codes.data(), sz.data(), rows, scores.data());
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0;
      for (int32_t i = 0; i < 128; ++i) want += double(q[i]) * back[r * 128 + i];
      EXPECT_NEAR(scores[r], want, 1e-4 * (1 + std::fabs(want))) << bits << " bits, row " << r;
    }
  }
}

TEST(KeyQuantTest, ManyQueriesScoreLikeOneAtATime) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  // The 4-bit formats with groups of 16k values take the AVX2 path where the
  // CPU has it; the others (and 2 bits) the portable one.
  for (const KeyQuantFormat f :
       {KeyQuantFormat{4, 32, 64}, KeyQuantFormat{2, 32, 64}, KeyQuantFormat{4, 16, 128},
        KeyQuantFormat{4, 64, 128}, KeyQuantFormat{4, 8, 24}}) {
    const int32_t bits = f.bits, dim = f.dim;
    const int64_t rows = 23;
    const int32_t n_q = 3;
    std::vector<float> x(rows * dim), q(n_q * dim), one(rows), many(n_q * rows, NAN);
    for (float& v : x) v = value(rng);
    for (float& v : q) v = value(rng);
    std::vector<uint8_t> codes(rows * f.CodeBytes());
    std::vector<float> sz(rows * f.Groups() * 2);
    QuantizeKeys(f, x.data(), dim, rows, codes.data(), sz.data());
    QuantizedKeyScoresMulti(f, q.data(), n_q, codes.data(), sz.data(), rows, many.data(), rows);
    for (int32_t j = 0; j < n_q; ++j) {
      QuantizedKeyScores(f, q.data() + j * dim, codes.data(), sz.data(), rows, one.data());
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_NEAR(many[j * rows + r], one[r], 1e-4 * (1 + std::fabs(one[r])))
            << bits << " bits, groups of " << f.group << ", dim " << dim << ", query " << j
            << ", row " << r;
      }
    }
  }
}

TEST(KeyQuantTest, ConstantGroupsAreExactAndFormatsAreChecked) {
  const KeyQuantFormat f{4, 8, 16};
  std::vector<float> x(16, 0.75f), back(16);
  for (int i = 8; i < 16; ++i) x[i] = -3.5f;
  std::vector<uint8_t> codes(f.CodeBytes());
  std::vector<float> sz(2 * f.Groups());
  QuantizeKeys(f, x.data(), 16, 1, codes.data(), sz.data());
  DequantizeKeys(f, codes.data(), sz.data(), 1, back.data(), 16);
  EXPECT_EQ(back, x);
  EXPECT_STREQ((KeyQuantFormat{3, 8, 16}.Error()), "bits must be 2 or 4");
  EXPECT_STREQ((KeyQuantFormat{4, 5, 16}.Error()), "group must divide dim");
  EXPECT_STREQ((KeyQuantFormat{2, 2, 16}.Error()), "a group's codes must fill whole bytes");
}

}  // namespace
}  // namespace headwise::kernels
