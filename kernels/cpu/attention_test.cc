// Tests of PartialAttention against a float64 naive softmax attention, with
// fresh random shapes, block splits, causal masks and KV dtypes each run (the
// seed is printed; set HEADWISE_TEST_SEED to replay). Outputs are NaN-poisoned
// before every call. Partials over random block subsets are merged with LseMerge.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/lse.h"

namespace headwise::kernels {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
// f32 accumulation over <= 3000 keys in [-1, 1]; measured max errors are 5-10x smaller.
constexpr double kLseTol = 2e-6;  // times (1 + |lse|)
constexpr double kOTol = 1e-5;

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("HEADWISE_TEST_SEED");
    const uint64_t s = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("attention_test: HEADWISE_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// One kv head's tokens, stored in the case's dtype, plus the f64 values the
// stored bits decode to (the reference works on the rounded KV).
struct HeadKv {
  std::vector<uint8_t> k, v;
  std::vector<double> k64, v64;
};

struct Case {
  int head_dim = 64, group = 1, n_kv = 1, n_tokens = 0, n_rows = 1;
  KvDtype dtype = KvDtype::kF32;
  bool causal = false;
  std::vector<float> q;        // [rows x n_kv*group x head_dim]
  std::vector<int32_t> q_pos;  // [rows]
  std::vector<HeadKv> kv;      // [n_kv]
  int32_t first_pos = 0;       // position of token 0
};

Case MakeCase(std::mt19937_64& rng, int head_dim, int group, int n_kv, int n_tokens, int n_rows,
              KvDtype dtype, bool causal, float q_amp) {
  Case c;
  c.head_dim = head_dim, c.group = group, c.n_kv = n_kv, c.n_tokens = n_tokens;
  c.n_rows = n_rows, c.dtype = dtype, c.causal = causal;
  c.first_pos = std::uniform_int_distribution<int32_t>(0, 1000)(rng);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  c.q.resize(static_cast<size_t>(n_rows) * n_kv * group * head_dim);
  for (float& x : c.q) x = u(rng) * q_amp;
  // Causal rows sit at the end of the token range (a prefill chunk attending to
  // its own KV) but some also before the first token (they see nothing).
  for (int r = 0; r < n_rows; ++r) {
    int32_t p = c.first_pos + n_tokens - n_rows + r;
    if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) p = c.first_pos - 1 - r;
    c.q_pos.push_back(p);
  }
  const size_t elems = static_cast<size_t>(n_tokens) * head_dim;
  c.kv.resize(n_kv);
  for (HeadKv& h : c.kv) {
    std::vector<float> k(elems), v(elems);
    for (float& x : k) x = u(rng);
    for (float& x : v) x = u(rng);
    h.k.resize(elems * KvDtypeSize(dtype) + 1);  // +1 keeps data() non-null
    h.v.resize(elems * KvDtypeSize(dtype) + 1);
    ToKvDtype(dtype, k.data(), h.k.data(), static_cast<int64_t>(elems));
    ToKvDtype(dtype, v.data(), h.v.data(), static_cast<int64_t>(elems));
    FromKvDtype(dtype, h.k.data(), k.data(), static_cast<int64_t>(elems));
    FromKvDtype(dtype, h.v.data(), v.data(), static_cast<int64_t>(elems));
    h.k64.assign(k.begin(), k.end());
    h.v64.assign(v.begin(), v.end());
  }
  return c;
}

// Float64 reference over tokens [t0, t1) of every kv head: o [rows x heads x
// head_dim], lse [rows x heads].
void Reference(const Case& c, int t0, int t1, std::vector<double>& o, std::vector<double>& lse) {
  const int heads = c.n_kv * c.group, hd = c.head_dim;
  o.assign(static_cast<size_t>(c.n_rows) * heads * hd, 0.0);
  lse.assign(static_cast<size_t>(c.n_rows) * heads, -INFINITY);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int r = 0; r < c.n_rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      const HeadKv& kv = c.kv[h / c.group];
      const float* q = &c.q[(static_cast<size_t>(r) * heads + h) * hd];
      std::vector<double> s;
      std::vector<int> idx;
      for (int t = t0; t < t1; ++t) {
        if (c.causal && c.first_pos + t > c.q_pos[r]) continue;
        double dot = 0.0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * kv.k64[t * hd + d];
        s.push_back(dot * scale);
        idx.push_back(t);
      }
      if (s.empty()) continue;
      const double m = *std::max_element(s.begin(), s.end());
      double sum = 0.0;
      double* orow = &o[(static_cast<size_t>(r) * heads + h) * hd];
      for (size_t i = 0; i < s.size(); ++i) {
        const double p = std::exp(s[i] - m);
        sum += p;
        for (int d = 0; d < hd; ++d) orow[d] += p * kv.v64[idx[i] * hd + d];
      }
      for (int d = 0; d < hd; ++d) orow[d] /= sum;
      lse[static_cast<size_t>(r) * heads + h] = m + std::log(sum);
    }
  }
}

// Splits [t0, t1) into blocks of random sizes (some empty), the same split for
// every kv head, head-major as PartialAttentionArgs wants.
std::vector<KvBlockView> SplitBlocks(const Case& c, int t0, int t1, std::mt19937_64& rng,
                                     int32_t* n_blocks) {
  std::vector<int> bounds = {t0};
  while (bounds.back() < t1) {
    const int len = std::uniform_int_distribution<int>(0, 80)(rng);
    bounds.push_back(std::min(t1, bounds.back() + len));
  }
  if (bounds.size() == 1) bounds.push_back(t1);  // one empty block
  *n_blocks = static_cast<int32_t>(bounds.size() - 1);
  std::vector<KvBlockView> blocks;
  const size_t row_bytes = static_cast<size_t>(c.head_dim) * KvDtypeSize(c.dtype);
  for (const HeadKv& h : c.kv) {
    for (size_t b = 0; b + 1 < bounds.size(); ++b) {
      KvBlockView blk;
      blk.n_tokens = bounds[b + 1] - bounds[b];
      if (blk.n_tokens > 0) {
        blk.k = h.k.data() + bounds[b] * row_bytes;
        blk.v = h.v.data() + bounds[b] * row_bytes;
      }
      blk.first_pos = c.first_pos + bounds[b];
      blocks.push_back(blk);
    }
  }
  return blocks;
}

PartialAttentionArgs ArgsFor(const Case& c, const std::vector<KvBlockView>& blocks,
                             int32_t n_blocks, std::vector<float>& o, std::vector<float>& lse) {
  const int heads = c.n_kv * c.group;
  o.assign(static_cast<size_t>(c.n_rows) * heads * c.head_dim, kNaN);
  lse.assign(static_cast<size_t>(c.n_rows) * heads, kNaN);
  PartialAttentionArgs a;
  a.head_dim = c.head_dim;
  a.group_size = c.group;
  a.n_kv_heads = c.n_kv;
  a.n_rows = c.n_rows;
  a.q = c.q.data();
  a.q_pos = c.q_pos.data();
  a.kv_dtype = c.dtype;
  a.blocks = blocks.data();
  a.n_blocks = n_blocks;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.causal = c.causal;
  a.o = o.data();
  a.lse = lse.data();
  return a;
}

void ExpectClose(const std::vector<float>& o, const std::vector<float>& lse,
                 const std::vector<double>& ro, const std::vector<double>& rlse,
                 const std::string& what) {
  ASSERT_EQ(o.size(), ro.size());
  ASSERT_EQ(lse.size(), rlse.size());
  int bad = 0;
  for (size_t i = 0; i < lse.size() && bad < 5; ++i) {
    if (std::isinf(rlse[i])) {
      if (!(std::isinf(lse[i]) && lse[i] < 0))
        ++bad, ADD_FAILURE() << what << " lse[" << i << "]=" << lse[i];
    } else if (!(std::fabs(lse[i] - rlse[i]) <= kLseTol * (1.0 + std::fabs(rlse[i])))) {
      ++bad, ADD_FAILURE() << what << " lse[" << i << "]=" << lse[i] << " want " << rlse[i];
    }
  }
  for (size_t i = 0; i < o.size() && bad < 5; ++i) {
    if (!(std::fabs(o[i] - ro[i]) <= kOTol)) {
      ++bad, ADD_FAILURE() << what << " o[" << i << "]=" << o[i] << " want " << ro[i];
    }
  }
}

KvDtype RandomDtype(std::mt19937_64& rng) {
  return static_cast<KvDtype>(std::uniform_int_distribution<int>(0, 2)(rng));
}

std::string Describe(const Case& c) {
  return "hd=" + std::to_string(c.head_dim) + " group=" + std::to_string(c.group) +
         " n_kv=" + std::to_string(c.n_kv) + " tokens=" + std::to_string(c.n_tokens) +
         " rows=" + std::to_string(c.n_rows) + " dtype=" + std::string(KvDtypeName(c.dtype)) +
         " causal=" + std::to_string(c.causal) + " seed=" + std::to_string(TestSeed());
}

// Random shapes with one call over a random block split.
TEST(PartialAttentionTest, MatchesFloat64Reference) {
  std::mt19937_64 rng(TestSeed());
  // Odd head_dims exercise the non-multiple-of-8 tails; group 7 the uneven
  // split of a tile's queries into passes of 4.
  const int kDims[] = {64, 128, 64, 128, 100, 7};
  const int kGroups[] = {1, 3, 4, 7};
  for (int iter = 0; iter < 150; ++iter) {
    const int hd = kDims[std::uniform_int_distribution<int>(0, 5)(rng)];
    const int group = kGroups[std::uniform_int_distribution<int>(0, 3)(rng)];
    const int n_kv = std::uniform_int_distribution<int>(1, 3)(rng);
    const int tokens = std::uniform_int_distribution<int>(1, 300)(rng);
    const bool causal = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    const int rows = std::uniform_int_distribution<int>(1, causal ? std::min(tokens, 40) : 6)(rng);
    const float amp = std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? 12.0f : 2.0f;
    const Case c = MakeCase(rng, hd, group, n_kv, tokens, rows, RandomDtype(rng), causal, amp);
    int32_t n_blocks = 0;
    const auto blocks = SplitBlocks(c, 0, tokens, rng, &n_blocks);
    std::vector<float> o, lse;
    ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));
    std::vector<double> ro, rlse;
    Reference(c, 0, tokens, ro, rlse);
    ExpectClose(o, lse, ro, rlse, Describe(c));
    if (HasFailure()) return;
  }
}

// Partials over random disjoint token ranges, merged by LseMerge in random
// order, equal attention over everything.
TEST(PartialAttentionTest, RandomSplitsMergeToFullAttention) {
  std::mt19937_64 rng(TestSeed() + 1);
  for (int iter = 0; iter < 60; ++iter) {
    const int hd = std::uniform_int_distribution<int>(0, 1)(rng) ? 64 : 128;
    const int group = std::uniform_int_distribution<int>(0, 1)(rng) ? 3 : 4;
    const int n_kv = std::uniform_int_distribution<int>(1, 2)(rng);
    const int tokens = std::uniform_int_distribution<int>(1, 300)(rng);
    const bool causal = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    const int rows = std::uniform_int_distribution<int>(1, std::min(tokens, 24))(rng);
    const Case c = MakeCase(rng, hd, group, n_kv, tokens, rows, RandomDtype(rng), causal, 4.0f);
    std::vector<int> cuts = {0, tokens};
    const int n_cuts = std::uniform_int_distribution<int>(0, 5)(rng);
    for (int i = 0; i < n_cuts; ++i)
      cuts.push_back(std::uniform_int_distribution<int>(0, tokens)(rng));
    std::sort(cuts.begin(), cuts.end());
    std::vector<size_t> order(cuts.size() - 1);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);

    const int heads = n_kv * group;
    std::vector<float> acc_o(static_cast<size_t>(rows) * heads * hd, 0.0f);
    std::vector<float> acc_lse(static_cast<size_t>(rows) * heads, -INFINITY);
    for (size_t part : order) {
      int32_t n_blocks = 0;
      const auto blocks = SplitBlocks(c, cuts[part], cuts[part + 1], rng, &n_blocks);
      std::vector<float> o, lse;
      ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));
      std::vector<double> ro, rlse;
      Reference(c, cuts[part], cuts[part + 1], ro, rlse);
      ExpectClose(o, lse, ro, rlse, "part " + Describe(c));
      // LseMerge rows are (row, head) pairs with head_dim values each.
      LseMerge(acc_o.data(), acc_lse.data(), o.data(), lse.data(), rows * heads, hd);
    }
    std::vector<double> ro, rlse;
    Reference(c, 0, tokens, ro, rlse);
    ExpectClose(acc_o, acc_lse, ro, rlse, "merged " + Describe(c));
    if (HasFailure()) return;
  }
}

TEST(PartialAttentionTest, EmptyBlockListGivesZeroAndMinusInf) {
  std::mt19937_64 rng(TestSeed() + 2);
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16}) {
    const Case c = MakeCase(rng, 64, 3, 2, 0, 3, dtype, false, 2.0f);
    std::vector<float> o, lse;
    ASSERT_TRUE(PartialAttention(ArgsFor(c, {}, 0, o, lse)));
    for (float x : o) EXPECT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
    // Padding blocks only (n_tokens == 0, null pointers) behave the same.
    std::vector<KvBlockView> pad(2 * 3);
    ASSERT_TRUE(PartialAttention(ArgsFor(c, pad, 3, o, lse)));
    for (float x : o) EXPECT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
  }
}

// Decode-shaped call (one row, no mask) at a realistic context length.
TEST(PartialAttentionTest, DecodeLongContext) {
  std::mt19937_64 rng(TestSeed() + 3);
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16}) {
    const Case c = MakeCase(rng, 64, 3, 3, 3000, 1, dtype, false, 8.0f);
    int32_t n_blocks = 0;
    const auto blocks = SplitBlocks(c, 0, c.n_tokens, rng, &n_blocks);
    std::vector<float> o, lse;
    ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));
    std::vector<double> ro, rlse;
    Reference(c, 0, c.n_tokens, ro, rlse);
    ExpectClose(o, lse, ro, rlse, Describe(c));
  }
}

// Runs every task alone, on its own thread, in reverse order.
class ThreadPerTaskFor final : public ParallelFor {
 public:
  void Run(int64_t n_tasks, const std::function<void(int64_t, int64_t)>& fn) const override {
    std::vector<std::thread> threads;
    for (int64_t t = n_tasks - 1; t >= 0; --t) threads.emplace_back([&fn, t] { fn(t, t + 1); });
    for (std::thread& th : threads) th.join();
    calls_.fetch_add(1);
  }
  mutable std::atomic<int> calls_{0};
};

// One call over all kv heads, per-head calls through strides, one row per
// call and a threaded ParallelFor all give bit-identical results.
TEST(PartialAttentionTest, StridesAndParallelForAreBitIdentical) {
  std::mt19937_64 rng(TestSeed() + 4);
  for (int iter = 0; iter < 10; ++iter) {
    const int tokens = std::uniform_int_distribution<int>(1, 300)(rng);
    const int rows = std::uniform_int_distribution<int>(1, std::min(tokens, 30))(rng);
    const Case c = MakeCase(rng, 64, 3, 3, tokens, rows, RandomDtype(rng), true, 4.0f);
    int32_t n_blocks = 0;
    const auto blocks = SplitBlocks(c, 0, tokens, rng, &n_blocks);
    std::vector<float> o, lse;
    ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));

    std::vector<float> po, plse;
    PartialAttentionArgs a = ArgsFor(c, blocks, n_blocks, po, plse);
    ThreadPerTaskFor pool;
    a.parallel = &pool;
    ASSERT_TRUE(PartialAttention(a));
    EXPECT_EQ(pool.calls_.load(), 1);
    EXPECT_EQ(0, std::memcmp(o.data(), po.data(), o.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse.data(), plse.data(), lse.size() * sizeof(float)));

    std::vector<float> ho, hlse;
    PartialAttentionArgs h = ArgsFor(c, blocks, n_blocks, ho, hlse);
    const int heads = c.n_kv * c.group;
    h.n_kv_heads = 1;
    h.q_row_stride = h.o_row_stride = static_cast<int64_t>(heads) * c.head_dim;
    h.lse_row_stride = heads;
    for (int kv = 0; kv < c.n_kv; ++kv) {
      PartialAttentionArgs one = h;
      one.q = c.q.data() + kv * c.group * c.head_dim;
      one.o = ho.data() + kv * c.group * c.head_dim;
      one.lse = hlse.data() + kv * c.group;
      one.blocks = blocks.data() + kv * n_blocks;
      ASSERT_TRUE(PartialAttention(one));
    }
    EXPECT_EQ(0, std::memcmp(o.data(), ho.data(), o.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse.data(), hlse.data(), lse.size() * sizeof(float)));

    // One row per call: every task holds different neighbours.
    std::vector<float> ro, rlse;
    PartialAttentionArgs r = ArgsFor(c, blocks, n_blocks, ro, rlse);
    r.n_rows = 1;
    for (int row = 0; row < c.n_rows; ++row) {
      PartialAttentionArgs one = r;
      one.q = c.q.data() + static_cast<size_t>(row) * heads * c.head_dim;
      one.q_pos = c.q_pos.data() + row;
      one.o = ro.data() + static_cast<size_t>(row) * heads * c.head_dim;
      one.lse = rlse.data() + static_cast<size_t>(row) * heads;
      ASSERT_TRUE(PartialAttention(one));
    }
    EXPECT_EQ(0, std::memcmp(o.data(), ro.data(), o.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse.data(), rlse.data(), lse.size() * sizeof(float)));
  }
}

// A NaN in one query row, or in one kv head's keys, shows up as NaN in the
// outputs it reaches instead of reading as an empty set or vanishing.
TEST(PartialAttentionTest, NaNPropagates) {
  std::mt19937_64 rng(TestSeed() + 6);
  for (float nan : {kNaN, -kNaN}) {
    Case c = MakeCase(rng, 64, 3, 2, 100, 2, KvDtype::kF32, false, 2.0f);
    c.q[5] = nan;  // row 0, q head 0 (kv head 0)
    int32_t n_blocks = 0;
    const auto blocks = SplitBlocks(c, 0, c.n_tokens, rng, &n_blocks);
    std::vector<float> o, lse;
    ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));
    EXPECT_TRUE(std::isnan(lse[0]));
    EXPECT_TRUE(std::isnan(o[0]));
    EXPECT_FALSE(std::isnan(lse[1]));  // the other heads are unaffected
    EXPECT_FALSE(std::isnan(lse[6 + 0]));

    c.q[5] = 0.5f;
    reinterpret_cast<float*>(c.kv[1].k.data())[64 * 70 + 3] = nan;  // kv head 1, token 70
    ASSERT_TRUE(PartialAttention(ArgsFor(c, blocks, n_blocks, o, lse)));
    for (int r = 0; r < 2; ++r) {
      for (int h = 0; h < 6; ++h) EXPECT_EQ(std::isnan(lse[r * 6 + h]), h >= 3) << r << " " << h;
    }
  }
}

TEST(PartialAttentionTest, RejectsBadArgsWithoutWriting) {
  std::mt19937_64 rng(TestSeed() + 5);
  const Case c = MakeCase(rng, 64, 3, 1, 10, 2, KvDtype::kF32, true, 1.0f);
  int32_t n_blocks = 0;
  const auto blocks = SplitBlocks(c, 0, 10, rng, &n_blocks);
  std::vector<float> o, lse;
  const PartialAttentionArgs good = ArgsFor(c, blocks, n_blocks, o, lse);
  EXPECT_EQ(PartialAttentionArgsError(good), nullptr);
  auto expect_rejected = [&](PartialAttentionArgs a) {
    EXPECT_NE(PartialAttentionArgsError(a), nullptr);
    EXPECT_FALSE(PartialAttention(a));
    for (float x : o) ASSERT_TRUE(std::isnan(x));
  };
  PartialAttentionArgs a = good;
  a.head_dim = 0;
  expect_rejected(a);
  a = good, a.head_dim = kMaxHeadDim + 1;
  expect_rejected(a);
  a = good, a.group_size = 0;
  expect_rejected(a);
  a = good, a.q_pos = nullptr;
  expect_rejected(a);
  a = good, a.q_row_stride = 10;
  expect_rejected(a);
  a = good, a.blocks = nullptr;
  expect_rejected(a);
  std::vector<KvBlockView> broken = blocks;
  broken[0].n_tokens = std::max(broken[0].n_tokens, 1);
  broken[0].k = nullptr;
  a = good, a.blocks = broken.data();
  expect_rejected(a);
}

}  // namespace
}  // namespace headwise::kernels
