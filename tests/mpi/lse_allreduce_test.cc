// LseAllreduce / LseReduce across ranks against a float64 full-softmax
// reference: every rank builds the same random attention problem from the
// run's seed, computes a partial over its own shard of the keys, and the
// merged result must equal attention over all keys. Run with 4 ranks.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "comm/lse_reduce.h"
#include "tests/mpi/mpi_test_env.h"

namespace headwise::comm {
namespace {

using headwise::testing::MpiTest;
using headwise::testing::Rank;
using headwise::testing::Seed;
using headwise::testing::Size;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// rows queries x keys keys: scaled scores and values, identical on every rank.
struct Problem {
  int64_t rows, dim, keys;
  std::vector<double> scores;  // rows x keys, already scaled by 1/sqrt(dim)
  std::vector<double> values;  // keys x dim
};

Problem MakeProblem(std::mt19937_64& rng, int64_t rows, int64_t dim, int64_t keys) {
  Problem p{rows, dim, keys, std::vector<double>(rows * keys), std::vector<double>(keys * dim)};
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> q(rows * dim), k(keys * dim);
  for (double& x : q) x = 2.0 * normal(rng);
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

// Softmax attention over keys [begin, end) in float64, stored as float like a
// kernel's output. An empty range gives (o = 0, lse = -inf).
void Partial(const Problem& p, int64_t begin, int64_t end, std::vector<float>* o,
             std::vector<float>* lse) {
  o->assign(p.rows * p.dim, 0.0f);
  lse->assign(p.rows, kNegInf);
  if (begin >= end) return;
  for (int64_t r = 0; r < p.rows; ++r) {
    const double* s = &p.scores[r * p.keys];
    const double m = *std::max_element(s + begin, s + end);
    double sum = 0;
    std::vector<double> acc(p.dim, 0.0);
    for (int64_t j = begin; j < end; ++j) {
      const double w = std::exp(s[j] - m);
      sum += w;
      for (int64_t d = 0; d < p.dim; ++d) acc[d] += w * p.values[j * p.dim + d];
    }
    for (int64_t d = 0; d < p.dim; ++d) (*o)[r * p.dim + d] = static_cast<float>(acc[d] / sum);
    (*lse)[r] = static_cast<float>(m + std::log(sum));
  }
}

// Random shard boundaries: size+1 sorted cut points in [0, keys]; equal cuts
// make empty shards.
std::vector<int64_t> RandomCuts(std::mt19937_64& rng, int64_t keys, int parts) {
  std::vector<int64_t> cuts(parts + 1);
  std::uniform_int_distribution<int64_t> pick(0, keys);
  for (int64_t& c : cuts) c = pick(rng);
  cuts.front() = 0;
  cuts.back() = keys;
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

// Relative 1e-5 (absolute below magnitude 1) against the float64 reference;
// reports at most a few mismatches.
void ExpectNear(const std::vector<float>& got_o, const std::vector<float>& got_lse,
                const Problem& p, const std::vector<double>& want_o,
                const std::vector<double>& want_lse) {
  int reported = 0;
  for (int64_t r = 0; r < p.rows; ++r) {
    const double tol = 1e-5 * std::max(1.0, std::abs(want_lse[r]));
    if (!(std::abs(got_lse[r] - want_lse[r]) <= tol) && reported++ < 5) {
      ADD_FAILURE() << "rank " << Rank() << " lse row " << r << ": got " << got_lse[r] << " want "
                    << want_lse[r];
    }
    for (int64_t d = 0; d < p.dim; ++d) {
      const double want = want_o[r * p.dim + d];
      const double got = got_o[r * p.dim + d];
      if (!(std::abs(got - want) <= 1e-5 * std::max(1.0, std::abs(want))) && reported++ < 5) {
        ADD_FAILURE() << "rank " << Rank() << " o[" << r << "][" << d << "]: got " << got
                      << " want " << want;
      }
    }
  }
}

// The float64 reference over all keys.
void Reference(const Problem& p, std::vector<double>* o, std::vector<double>* lse) {
  o->assign(p.rows * p.dim, 0.0);
  lse->assign(p.rows, 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    const double* s = &p.scores[r * p.keys];
    const double m = *std::max_element(s, s + p.keys);
    double sum = 0;
    for (int64_t j = 0; j < p.keys; ++j) {
      const double w = std::exp(s[j] - m);
      sum += w;
      for (int64_t d = 0; d < p.dim; ++d) (*o)[r * p.dim + d] += w * p.values[j * p.dim + d];
    }
    for (int64_t d = 0; d < p.dim; ++d) (*o)[r * p.dim + d] /= sum;
    (*lse)[r] = m + std::log(sum);
  }
}

class LseAllreduceTest : public MpiTest {};

TEST_F(LseAllreduceTest, MatchesFullSoftmaxOverRandomShards) {
  std::mt19937_64 rng(Seed());
  // Several shapes, so several row datatypes are created and cached.
  const int64_t shapes[][3] = {{9, 64, 1000}, {4, 128, 333}, {1, 1, 50}, {27, 7, 2048}};
  for (const auto& shape : shapes) {
    const Problem p = MakeProblem(rng, shape[0], shape[1], shape[2]);
    const std::vector<int64_t> cuts = RandomCuts(rng, p.keys, Size());
    std::vector<float> o, lse;
    Partial(p, cuts[Rank()], cuts[Rank() + 1], &o, &lse);
    HW_ASSERT_OK(LseAllreduce(o.data(), lse.data(), p.rows, p.dim, MPI_COMM_WORLD));
    std::vector<double> want_o, want_lse;
    Reference(p, &want_o, &want_lse);
    ExpectNear(o, lse, p, want_o, want_lse);
  }
}

TEST_F(LseAllreduceTest, ReduceToEachRoot) {
  std::mt19937_64 rng(Seed() ^ 0x5eed);
  const Problem p = MakeProblem(rng, 9, 64, 777);
  std::vector<double> want_o, want_lse;
  Reference(p, &want_o, &want_lse);
  for (int root = 0; root < Size(); ++root) {
    const std::vector<int64_t> cuts = RandomCuts(rng, p.keys, Size());
    std::vector<float> o, lse;
    Partial(p, cuts[Rank()], cuts[Rank() + 1], &o, &lse);
    const std::vector<float> mine_o = o, mine_lse = lse;
    HW_ASSERT_OK(LseReduce(o.data(), lse.data(), p.rows, p.dim, root, MPI_COMM_WORLD));
    if (Rank() == root) {
      ExpectNear(o, lse, p, want_o, want_lse);
    } else {
      EXPECT_EQ(o, mine_o) << "non-root buffers must be left unchanged";
      EXPECT_EQ(lse, mine_lse);
    }
  }
}

TEST_F(LseAllreduceTest, EmptyShardsContributeNothing) {
  std::mt19937_64 rng(Seed() ^ 0xe3717);
  const Problem p = MakeProblem(rng, 9, 64, 500);
  // Only the last rank holds keys; the others are empty, with o poisoned:
  // lse = -inf must make o irrelevant.
  std::vector<float> o, lse;
  const bool holder = Rank() == Size() - 1;
  Partial(p, 0, holder ? p.keys : 0, &o, &lse);
  if (!holder) std::fill(o.begin(), o.end(), std::numeric_limits<float>::quiet_NaN());
  HW_ASSERT_OK(LseAllreduce(o.data(), lse.data(), p.rows, p.dim, MPI_COMM_WORLD));
  std::vector<double> want_o, want_lse;
  Reference(p, &want_o, &want_lse);
  ExpectNear(o, lse, p, want_o, want_lse);
}

TEST_F(LseAllreduceTest, AllShardsEmptyGiveEmpty) {
  const int64_t rows = 5, dim = 16;
  std::vector<float> o(rows * dim, 0.0f), lse(rows, kNegInf);
  HW_ASSERT_OK(LseAllreduce(o.data(), lse.data(), rows, dim, MPI_COMM_WORLD));
  for (float x : o) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, kNegInf);
}

TEST_F(LseAllreduceTest, BadArgumentsFailOnEveryRankWithoutCommunicating) {
  std::vector<float> o(8), lse(2);
  EXPECT_TRUE(absl::IsInvalidArgument(LseAllreduce(o.data(), lse.data(), 2, 0, MPI_COMM_WORLD)));
  EXPECT_TRUE(absl::IsInvalidArgument(LseAllreduce(o.data(), lse.data(), -1, 4, MPI_COMM_WORLD)));
  EXPECT_TRUE(
      absl::IsInvalidArgument(LseReduce(o.data(), lse.data(), 2, 4, Size(), MPI_COMM_WORLD)));
  EXPECT_TRUE(LseAllreduce(nullptr, nullptr, 0, 4, MPI_COMM_WORLD).ok());
}

}  // namespace
}  // namespace headwise::comm
