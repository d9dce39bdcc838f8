// Tests of kernels/ops.h against float64 references and hand-computed values:
// KV dtype conversions (exhaustive over 16-bit inputs, ties, overflow), RMSNorm,
// RoPE in both ggml modes, SwiGLU, Add and Softmax. Random inputs use a fresh
// seed each run (printed; HEADWISE_TEST_SEED replays it).
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

namespace headwise::kernels {
namespace {

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("HEADWISE_TEST_SEED");
    const uint64_t s = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("ops_test: HEADWISE_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

std::vector<float> RandomVector(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Independent round-to-nearest-even reference: the nearest of all finite
// values of a 16-bit format (its sorted non-negative values with their bits).
// Only for |f| below the format's overflow threshold.
uint16_t NearestEven(const std::vector<std::pair<double, uint16_t>>& table, float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  auto it = std::lower_bound(table.begin(), table.end(), std::make_pair(a, uint16_t{0}));
  if (it == table.end()) return static_cast<uint16_t>(sign | table.back().second);
  if (it->first == a || it == table.begin()) return static_cast<uint16_t>(sign | it->second);
  const auto lo = *(it - 1), hi = *it;
  const double dlo = a - lo.first, dhi = hi.first - a;
  const uint16_t pick = dlo < dhi   ? lo.second
                        : dhi < dlo ? hi.second
                                    : ((lo.second & 1) == 0 ? lo.second : hi.second);
  return static_cast<uint16_t>(sign | pick);
}

std::vector<std::pair<double, uint16_t>> FiniteTable(float (*decode)(uint16_t), uint16_t inf_bits) {
  std::vector<std::pair<double, uint16_t>> t;
  for (uint32_t b = 0; b < inf_bits; ++b) t.emplace_back(decode(static_cast<uint16_t>(b)), b);
  return t;  // already increasing: positive values' bits are monotonic
}

TEST(KvDtypeTest, NamesAndSizes) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16}) {
    EXPECT_EQ(ParseKvDtype(KvDtypeName(d)), d);
  }
  EXPECT_EQ(KvDtypeSize(KvDtype::kF32), 4u);
  EXPECT_EQ(KvDtypeSize(KvDtype::kF16), 2u);
  EXPECT_EQ(KvDtypeSize(KvDtype::kBF16), 2u);
  EXPECT_FALSE(ParseKvDtype("fp16").has_value());
}

TEST(KvDtypeTest, F16HandValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(F16ToF32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);                      // tie with 65536 rounds to even = inf
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);             // tie -> 0
  EXPECT_EQ(F32ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp tie -> even
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
}

TEST(KvDtypeTest, Bf16HandValues) {
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie -> even
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lies only in the dropped bits must stay NaN.
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::bit_cast<float>(0x7f800001u)))));
}

// Every 16-bit pattern decodes and re-encodes to itself (NaN to a NaN).
TEST(KvDtypeTest, ExhaustiveRoundTrip) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<uint16_t>(b);
    const float f = F16ToF32(h), g = Bf16ToF32(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f)))) << b;
    } else {
      ASSERT_EQ(F32ToF16(f), h) << b;
    }
    if (std::isnan(g)) {
      EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(g)))) << b;
    } else {
      ASSERT_EQ(F32ToBf16(g), h) << b;
    }
  }
}

// Random floats and exact midpoints between neighbours round as the
// independent nearest-even reference says.
TEST(KvDtypeTest, RoundToNearestEvenMatchesReference) {
  const auto f16 = FiniteTable(&F16ToF32, 0x7c00);
  const auto bf16 = FiniteTable(&Bf16ToF32, 0x7f80);
  auto check = [&](float f) {
    const double a = std::fabs(static_cast<double>(f));
    const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    const uint16_t want16 = a >= 65520.0 ? (sign | 0x7c00) : NearestEven(f16, f);
    ASSERT_EQ(F32ToF16(f), want16) << f;
    // bf16 overflow threshold: halfway between max finite and 2^128.
    const double bf_over = (static_cast<double>(Bf16ToF32(0x7f7f)) + std::ldexp(1.0, 128)) / 2;
    const uint16_t want_bf = a >= bf_over ? (sign | 0x7f80) : NearestEven(bf16, f);
    ASSERT_EQ(F32ToBf16(f), want_bf) << f;
  };
  std::mt19937_64 rng(TestSeed());
  for (int i = 0; i < 200000; ++i) {
    const auto bits = static_cast<uint32_t>(rng());
    const float f = std::bit_cast<float>(bits);
    if (std::isnan(f) || std::isinf(f)) continue;
    check(f);
  }
  for (uint32_t b = 0; b + 1 < 0x7c00; ++b) {  // every f16 midpoint (exact in f32)
    const double mid =
        (F16ToF32(static_cast<uint16_t>(b)) + F16ToF32(static_cast<uint16_t>(b + 1))) / 2;
    check(static_cast<float>(mid));
    check(-static_cast<float>(mid));
  }
}

TEST(KvDtypeTest, RowConversions) {
  std::mt19937_64 rng(TestSeed() + 1);
  const auto x = RandomVector(rng, 1000, -100.0f, 100.0f);
  for (KvDtype d : {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16}) {
    std::vector<uint8_t> stored(x.size() * KvDtypeSize(d));
    std::vector<float> back(x.size(), std::numeric_limits<float>::quiet_NaN());
    ToKvDtype(d, x.data(), stored.data(), static_cast<int64_t>(x.size()));
    FromKvDtype(d, stored.data(), back.data(), static_cast<int64_t>(x.size()));
    const double rel = d == KvDtype::kF32 ? 0.0 : d == KvDtype::kF16 ? 1.0 / 2048 : 1.0 / 256;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(back[i] - x[i]), rel * std::fabs(x[i])) << KvDtypeName(d) << " " << i;
    }
  }
}

TEST(OpsTest, RmsNormMatchesFloat64) {
  std::mt19937_64 rng(TestSeed() + 2);
  const int rows = 5, n = 576;
  const float eps = 1e-5f;
  const auto x = RandomVector(rng, rows * n, -3.0f, 3.0f);
  const auto w = RandomVector(rng, n, 0.0f, 2.0f);
  std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
  RmsNorm(y.data(), x.data(), w.data(), rows, n, eps);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (int i = 0; i < n; ++i) {
      const double want = x[r * n + i] * inv * w[i];
      ASSERT_NEAR(y[r * n + i], want, 1e-6 * std::max(1.0, std::fabs(want)));
    }
  }
  // Hand value: x = (3, 4), eps = 0: rms = sqrt(12.5), weights (1, 2).
  const float x2[2] = {3, 4}, w2[2] = {1, 2};
  float y2[2];
  RmsNorm(y2, x2, w2, 1, 2, 0.0f);
  EXPECT_FLOAT_EQ(y2[0], 3 / std::sqrt(12.5f));
  EXPECT_FLOAT_EQ(y2[1], 8 / std::sqrt(12.5f));
  RmsNorm(y2, y2, w2, 1, 2, 0.0f);  // in place is allowed
  EXPECT_TRUE(std::isfinite(y2[0]));
}

TEST(OpsTest, RopeRejectsBadParams) {
  float x[4] = {1, 2, 3, 4};
  const int32_t pos = 3;
  RopeParams p;
  for (int32_t n_rot : {0, 3, 6, -2}) {
    p.n_rot = n_rot;
    EXPECT_FALSE(Rope(x, &pos, 1, 1, 4, p)) << n_rot;
  }
  p.n_rot = 4;
  p.freq_base = 0.0f;
  EXPECT_FALSE(Rope(x, &pos, 1, 1, 4, p));
  p.freq_base = 10000.0f;
  p.freq_scale = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(Rope(x, &pos, 1, 1, 4, p));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(x[i], i + 1.0f);
}

TEST(OpsTest, RopeHandComputed) {
  // head_dim 4, pos 1, base 10000: pair 0 turns 1 rad, pair 1 turns 0.01 rad.
  const float in[4] = {1, 2, 3, 4};
  const int32_t pos = 1;
  const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.01), s1 = std::sin(0.01);
  RopeParams p;
  p.n_rot = 4;
  float x[4] = {1, 2, 3, 4};
  p.mode = RopeMode::kNorm;  // pairs (0,1) and (2,3)
  ASSERT_TRUE(Rope(x, &pos, 1, 1, 4, p));
  EXPECT_NEAR(x[0], 1 * c0 - 2 * s0, 1e-6);
  EXPECT_NEAR(x[1], 1 * s0 + 2 * c0, 1e-6);
  EXPECT_NEAR(x[2], 3 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(x[3], 3 * s1 + 4 * c1, 1e-6);
  std::copy(in, in + 4, x);
  p.mode = RopeMode::kNeox;  // pairs (0,2) and (1,3)
  ASSERT_TRUE(Rope(x, &pos, 1, 1, 4, p));
  EXPECT_NEAR(x[0], 1 * c0 - 3 * s0, 1e-6);
  EXPECT_NEAR(x[2], 1 * s0 + 3 * c0, 1e-6);
  EXPECT_NEAR(x[1], 2 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(x[3], 2 * s1 + 4 * c1, 1e-6);
  // Position 0 is the identity; freq_factors divide the angle.
  std::copy(in, in + 4, x);
  const int32_t zero = 0;
  ASSERT_TRUE(Rope(x, &zero, 1, 1, 4, p));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(x[i], in[i]);
  const float ff[2] = {2.0f, 1.0f};
  p.freq_factors = ff;
  p.mode = RopeMode::kNorm;
  std::copy(in, in + 4, x);
  ASSERT_TRUE(Rope(x, &pos, 1, 1, 4, p));
  EXPECT_NEAR(x[0], 1 * std::cos(0.5) - 2 * std::sin(0.5), 1e-6);
}

// Float64 model of ggml's rope (ext_factor 0, attn_factor 1).
void RopeReference(std::vector<double>& x, const std::vector<int32_t>& pos, int n_heads,
                   int head_dim, int64_t row_stride, const RopeParams& p) {
  const int half = p.n_rot / 2;
  for (size_t r = 0; r < pos.size(); ++r) {
    for (int h = 0; h < n_heads; ++h) {
      double* v = &x[r * row_stride + h * head_dim];
      for (int i = 0; i < half; ++i) {
        const double ff = p.freq_factors ? p.freq_factors[i] : 1.0;
        const double theta = pos[r] * static_cast<double>(p.freq_scale) *
                             std::pow(p.freq_base, -2.0 * i / p.n_rot) / ff;
        const int a = p.mode == RopeMode::kNorm ? 2 * i : i;
        const int b = p.mode == RopeMode::kNorm ? 2 * i + 1 : i + half;
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
        v[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
      }
    }
  }
}

TEST(OpsTest, RopeMatchesFloat64BothModes) {
  std::mt19937_64 rng(TestSeed() + 3);
  for (RopeMode mode : {RopeMode::kNorm, RopeMode::kNeox}) {
    const int rows = 7, n_heads = 3, head_dim = 64, n_rot = 48;
    const int64_t stride = n_heads * head_dim + 10;  // rows padded, padding untouched
    auto x = RandomVector(rng, rows * stride, -2.0f, 2.0f);
    const auto ff = RandomVector(rng, n_rot / 2, 1.0f, 8.0f);
    std::vector<int32_t> pos;
    for (int r = 0; r < rows; ++r)
      pos.push_back(std::uniform_int_distribution<int32_t>(0, 131072)(rng));
    RopeParams p;
    p.mode = mode, p.n_rot = n_rot, p.freq_base = 500000.0f, p.freq_scale = 0.5f;
    p.freq_factors = ff.data();
    std::vector<double> want(x.begin(), x.end());
    RopeReference(want, pos, n_heads, head_dim, stride, p);
    ASSERT_TRUE(Rope(x.data(), pos.data(), rows, n_heads, head_dim, p, stride));
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], want[i], 2e-6) << i;
  }
}

// llama.cpp's converter permutes HF q/k rows so that NORM on permuted data
// equals the permutation of NEOX on the original: P[2i + j] = x[j * n/2 + i].
TEST(OpsTest, RopeNormIsNeoxOnConverterPermutedHeads) {
  std::mt19937_64 rng(TestSeed() + 4);
  const int head_dim = 64, n_heads = 2;
  const auto x = RandomVector(rng, n_heads * head_dim, -1.0f, 1.0f);
  auto permute = [&](const std::vector<float>& v) {
    std::vector<float> out(v.size());
    for (int h = 0; h < n_heads; ++h)
      for (int i = 0; i < head_dim / 2; ++i)
        for (int j = 0; j < 2; ++j)
          out[h * head_dim + 2 * i + j] = v[h * head_dim + j * head_dim / 2 + i];
    return out;
  };
  RopeParams p;
  p.n_rot = head_dim;
  const int32_t pos = 1234;
  auto neox = x;
  p.mode = RopeMode::kNeox;
  ASSERT_TRUE(Rope(neox.data(), &pos, 1, n_heads, head_dim, p));
  auto norm = permute(x);
  p.mode = RopeMode::kNorm;
  ASSERT_TRUE(Rope(norm.data(), &pos, 1, n_heads, head_dim, p));
  const auto want = permute(neox);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(norm[i], want[i]) << i;
}

TEST(OpsTest, SwiGluAndAdd) {
  std::mt19937_64 rng(TestSeed() + 5);
  const auto g = RandomVector(rng, 1000, -20.0f, 20.0f);
  const auto u = RandomVector(rng, 1000, -3.0f, 3.0f);
  std::vector<float> out(g.size(), std::numeric_limits<float>::quiet_NaN());
  SwiGlu(out.data(), g.data(), u.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    ASSERT_NEAR(out[i], want, 1e-6 * std::max(1.0, std::fabs(want)));
  }
  const float big[2] = {-200.0f, 200.0f}, one[2] = {1.0f, 1.0f};
  float sw[2];
  SwiGlu(sw, big, one, 2);  // silu(-200) underflows to -0, silu(200) = 200
  EXPECT_EQ(sw[0], 0.0f);
  EXPECT_EQ(sw[1], 200.0f);
  std::vector<float> sum(g.size());
  Add(sum.data(), g.data(), u.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(sum[i], g[i] + u[i]);
}

TEST(OpsTest, SoftmaxStable) {
  std::mt19937_64 rng(TestSeed() + 6);
  auto x = RandomVector(rng, 49152, -30.0f, 30.0f);
  x[5] = 1000.0f;  // would overflow without the max shift
  x[6] = -INFINITY;
  std::vector<double> want(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sum += want[i] = std::exp(static_cast<double>(x[i]) - 1000.0);
  Softmax(x.data(), static_cast<int64_t>(x.size()));
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(x[i], want[i] / sum, 1e-7);
    total += x[i];
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_EQ(x[6], 0.0f);
  float hand[3] = {0.0f, std::log(2.0f), std::log(5.0f)};  // 1 : 2 : 5
  Softmax(hand, 3);
  EXPECT_FLOAT_EQ(hand[0], 0.125f);
  EXPECT_FLOAT_EQ(hand[1], 0.25f);
  EXPECT_FLOAT_EQ(hand[2], 0.625f);
  float masked[2] = {-INFINITY, -INFINITY};
  Softmax(masked, 2);
  EXPECT_EQ(masked[0], 0.0f);
  EXPECT_EQ(masked[1], 0.0f);
}

}  // namespace
}  // namespace headwise::kernels
