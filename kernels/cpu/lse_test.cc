// Tests LseMerge against a float64 full softmax: partials are computed over
// random splits of random scores and values, merged in random orders and tree
// shapes. Fresh seed each run (printed on failure); HEADWISE_TEST_SEED fixes it.
#include "kernels/lse.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace headwise::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t TestSeed() {
  if (const char* env = std::getenv("HEADWISE_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

// rows x dim partial attention in float, as a kernel would hand it over.
struct Partial {
  std::vector<float> o;
  std::vector<float> lse;
};

// Attention problem: per row, `keys` scaled scores and keys x dim values.
struct Problem {
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t keys = 0;
  std::vector<double> scores;  // rows x keys
  std::vector<double> values;  // keys x dim
};

Problem RandomProblem(std::mt19937_64& rng, int64_t rows, int64_t dim, int64_t keys) {
  Problem p{rows, dim, keys, std::vector<double>(rows * keys), std::vector<double>(keys * dim)};
  // Scores as q.k / sqrt(dim) from random q and k, with a wide spread so the
  // merge sees lse values far apart.
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> q(rows * dim), k(keys * dim);
  for (double& x : q) x = 3.0 * normal(rng);
  for (double& x : k) x = normal(rng);
  for (double& x : p.values) x = normal(rng);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < keys; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < dim; ++d) dot += q[r * dim + d] * k[j * dim + d];
      p.scores[r * keys + j] = dot * scale;
    }
  }
  return p;
}

// Partial attention over the keys in `subset`, computed in double then rounded.
Partial PartialOver(const Problem& p, const std::vector<int64_t>& subset) {
  Partial out{std::vector<float>(p.rows * p.dim, 0.0f), std::vector<float>(p.rows, kNegInf)};
  if (subset.empty()) return out;
  for (int64_t r = 0; r < p.rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j : subset) m = std::max(m, p.scores[r * p.keys + j]);
    double sum = 0;
    std::vector<double> acc(p.dim, 0.0);
    for (int64_t j : subset) {
      const double w = std::exp(p.scores[r * p.keys + j] - m);
      sum += w;
      for (int64_t d = 0; d < p.dim; ++d) acc[d] += w * p.values[j * p.dim + d];
    }
    for (int64_t d = 0; d < p.dim; ++d) out.o[r * p.dim + d] = static_cast<float>(acc[d] / sum);
    out.lse[r] = static_cast<float>(m + std::log(sum));
  }
  return out;
}

// The float64 reference: full softmax attention over every key.
std::vector<double> FullReference(const Problem& p, std::vector<double>* lse) {
  std::vector<double> o(p.rows * p.dim, 0.0);
  lse->assign(p.rows, 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < p.keys; ++j) m = std::max(m, p.scores[r * p.keys + j]);
    double sum = 0;
    for (int64_t j = 0; j < p.keys; ++j) {
      const double w = std::exp(p.scores[r * p.keys + j] - m);
      sum += w;
      for (int64_t d = 0; d < p.dim; ++d) o[r * p.dim + d] += w * p.values[j * p.dim + d];
    }
    for (int64_t d = 0; d < p.dim; ++d) o[r * p.dim + d] /= sum;
    (*lse)[r] = m + std::log(sum);
  }
  return o;
}

// Splits 0..keys-1 into `parts` random subsets (some possibly empty).
std::vector<std::vector<int64_t>> RandomSplit(std::mt19937_64& rng, int64_t keys, int parts) {
  std::vector<std::vector<int64_t>> split(parts);
  std::uniform_int_distribution<int> pick(0, parts - 1);
  for (int64_t j = 0; j < keys; ++j) split[pick(rng)].push_back(j);
  return split;
}

Partial Empty(int64_t rows, int64_t dim) {
  return Partial{std::vector<float>(rows * dim, 0.0f), std::vector<float>(rows, kNegInf)};
}

void ExpectMatchesReference(const Problem& p, const Partial& got) {
  std::vector<double> want_lse;
  const std::vector<double> want_o = FullReference(p, &want_lse);
  for (int64_t r = 0; r < p.rows; ++r) {
    ASSERT_NEAR(got.lse[r], want_lse[r], 1e-5 * std::max(1.0, std::abs(want_lse[r])))
        << "row " << r;
    for (int64_t d = 0; d < p.dim; ++d) {
      const double want = want_o[r * p.dim + d];
      ASSERT_NEAR(got.o[r * p.dim + d], want, 1e-5 * std::max(1.0, std::abs(want)))
          << "row " << r << " d " << d;
    }
  }
}

TEST(LseMergeTest, RandomSplitsInRandomOrderMatchFullSoftmax) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("HEADWISE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 9)(rng);
    const int64_t dim = std::uniform_int_distribution<int64_t>(1, 80)(rng);
    const int64_t keys = std::uniform_int_distribution<int64_t>(1, 300)(rng);
    const int parts = std::uniform_int_distribution<int>(1, 12)(rng);
    const Problem p = RandomProblem(rng, rows, dim, keys);
    std::vector<std::vector<int64_t>> split = RandomSplit(rng, keys, parts);
    std::shuffle(split.begin(), split.end(), rng);

    // Poisoned accumulator: an empty lse must make its o irrelevant.
    Partial acc = Empty(rows, dim);
    std::fill(acc.o.begin(), acc.o.end(), std::numeric_limits<float>::quiet_NaN());
    for (const auto& subset : split) {
      const Partial part = PartialOver(p, subset);
      LseMerge(acc.o.data(), acc.lse.data(), part.o.data(), part.lse.data(), rows, dim);
    }
    ExpectMatchesReference(p, acc);
  }
}

TEST(LseMergeTest, RandomTreeShapesMatchFullSoftmax) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("HEADWISE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t rows = 4, dim = 64;
    const int64_t keys = std::uniform_int_distribution<int64_t>(1, 500)(rng);
    const Problem p = RandomProblem(rng, rows, dim, keys);
    std::vector<Partial> pool;
    for (const auto& subset : RandomSplit(rng, keys, 16)) pool.push_back(PartialOver(p, subset));
    // Repeatedly merge two random members until one is left.
    while (pool.size() > 1) {
      std::shuffle(pool.begin(), pool.end(), rng);
      Partial in = std::move(pool.back());
      pool.pop_back();
      LseMerge(pool.back().o.data(), pool.back().lse.data(), in.o.data(), in.lse.data(), rows, dim);
    }
    ExpectMatchesReference(p, pool.front());
  }
}

TEST(LseMergeTest, Associative) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("HEADWISE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 8, dim = 32, keys = 200;
  const Problem p = RandomProblem(rng, rows, dim, keys);
  const auto split = RandomSplit(rng, keys, 3);
  const Partial a = PartialOver(p, split[0]), b = PartialOver(p, split[1]),
                c = PartialOver(p, split[2]);

  Partial left = a;  // (a + b) + c
  LseMerge(left.o.data(), left.lse.data(), b.o.data(), b.lse.data(), rows, dim);
  LseMerge(left.o.data(), left.lse.data(), c.o.data(), c.lse.data(), rows, dim);
  Partial bc = b;  // a + (b + c)
  LseMerge(bc.o.data(), bc.lse.data(), c.o.data(), c.lse.data(), rows, dim);
  Partial right = a;
  LseMerge(right.o.data(), right.lse.data(), bc.o.data(), bc.lse.data(), rows, dim);
  Partial swapped = c;  // commutative: c + (b + a)
  Partial ba = b;
  LseMerge(ba.o.data(), ba.lse.data(), a.o.data(), a.lse.data(), rows, dim);
  LseMerge(swapped.o.data(), swapped.lse.data(), ba.o.data(), ba.lse.data(), rows, dim);

  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NEAR(left.lse[r], right.lse[r], 1e-5 * std::max(1.0f, std::abs(left.lse[r])));
    EXPECT_NEAR(left.lse[r], swapped.lse[r], 1e-5 * std::max(1.0f, std::abs(left.lse[r])));
  }
  for (int64_t i = 0; i < rows * dim; ++i) {
    EXPECT_NEAR(left.o[i], right.o[i], 1e-5 * std::max(1.0f, std::abs(left.o[i]))) << i;
    EXPECT_NEAR(left.o[i], swapped.o[i], 1e-5 * std::max(1.0f, std::abs(left.o[i]))) << i;
  }
}

TEST(LseMergeTest, EmptySets) {
  const int64_t rows = 3, dim = 5;
  // empty + empty stays (0, -inf), even from a garbage o.
  Partial acc = Empty(rows, dim);
  std::fill(acc.o.begin(), acc.o.end(), 7.0f);
  const Partial empty = Empty(rows, dim);
  LseMerge(acc.o.data(), acc.lse.data(), empty.o.data(), empty.lse.data(), rows, dim);
  for (float x : acc.o) EXPECT_EQ(x, 0.0f);
  for (float x : acc.lse) EXPECT_EQ(x, kNegInf);

  // x + empty and empty + x are exactly x.
  Partial x{std::vector<float>(rows * dim), {0.5f, -3.0f, 40.0f}};
  for (int64_t i = 0; i < rows * dim; ++i) x.o[i] = 0.25f * static_cast<float>(i) - 1.0f;
  Partial x_acc = x;
  LseMerge(x_acc.o.data(), x_acc.lse.data(), empty.o.data(), empty.lse.data(), rows, dim);
  EXPECT_EQ(x_acc.o, x.o);
  EXPECT_EQ(x_acc.lse, x.lse);
  Partial e_acc = Empty(rows, dim);
  LseMerge(e_acc.o.data(), e_acc.lse.data(), x.o.data(), x.lse.data(), rows, dim);
  EXPECT_EQ(e_acc.o, x.o);
  EXPECT_EQ(e_acc.lse, x.lse);

  // Zero rows: pointers may be null.
  LseMerge(nullptr, nullptr, nullptr, nullptr, 0, dim);
}

TEST(LseMergeTest, FarApartLseNeitherOverflowsNorMakesNan) {
  const int64_t dim = 2;
  std::vector<float> o_acc = {1.0f, -1.0f, 1.0f, -1.0f};
  std::vector<float> lse_acc = {1000.0f, -1000.0f};
  const std::vector<float> o_in = {3.0f, 4.0f, 3.0f, 4.0f};
  const std::vector<float> lse_in = {-1000.0f, 1000.0f};
  LseMerge(o_acc.data(), lse_acc.data(), o_in.data(), lse_in.data(), 2, dim);
  EXPECT_FLOAT_EQ(lse_acc[0], 1000.0f);
  EXPECT_FLOAT_EQ(lse_acc[1], 1000.0f);
  EXPECT_FLOAT_EQ(o_acc[0], 1.0f);
  EXPECT_FLOAT_EQ(o_acc[1], -1.0f);
  EXPECT_FLOAT_EQ(o_acc[2], 3.0f);
  EXPECT_FLOAT_EQ(o_acc[3], 4.0f);

  // Equal lse: plain average, lse + log 2.
  std::vector<float> o2 = {2.0f, 0.0f};
  std::vector<float> l2 = {80.0f};
  const std::vector<float> o3 = {0.0f, 2.0f};
  const std::vector<float> l3 = {80.0f};
  LseMerge(o2.data(), l2.data(), o3.data(), l3.data(), 1, dim);
  EXPECT_FLOAT_EQ(o2[0], 1.0f);
  EXPECT_FLOAT_EQ(o2[1], 1.0f);
  EXPECT_FLOAT_EQ(l2[0], 80.0f + std::log(2.0f));
}

}  // namespace
}  // namespace headwise::kernels
