// main() for multi-rank GoogleTest binaries: initialises MPI through
// MpiSession, lets only rank 0 print the usual GoogleTest output (other ranks
// print their failures prefixed by rank), broadcasts the run's seed, and exits
// non-zero on every rank if any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi.h"
#include "tests/mpi/mpi_test_env.h"

namespace headwise::testing {
namespace {

int g_rank = 0;
int g_size = 1;
uint64_t g_seed = 0;

// Non-zero ranks: only failures, one line each, prefixed by the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }

 private:
  int rank_;
};

}  // namespace

int Rank() { return g_rank; }
int Size() { return g_size; }
uint64_t Seed() { return g_seed; }

void MpiTest::TearDown() {
  int failed = HasFailure() ? 1 : 0;
  std::vector<int> all(g_size, 0);
  MPI_Allgather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::string others;
  for (int r = 0; r < g_size; ++r) {
    if (all[r] && r != g_rank) others.append(" ").append(std::to_string(r));
  }
  if (!others.empty() && !failed) ADD_FAILURE() << "test failed on rank(s)" << others;
}

}  // namespace headwise::testing

int main(int argc, char** argv) {
  absl::StatusOr<headwise::comm::MpiSession> session =
      headwise::comm::MpiSession::Init(&argc, &argv);
  if (!session.ok()) {
    std::fprintf(stderr, "MPI init failed: %s\n", session.status().ToString().c_str());
    return 2;
  }
  headwise::testing::g_rank = session->rank();
  headwise::testing::g_size = session->size();

  ::testing::InitGoogleTest(&argc, argv);
  if (session->rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new headwise::testing::RankFailurePrinter(session->rank()));
  }

  unsigned long long seed = 0;
  if (session->rank() == 0) {
    const char* env = std::getenv("HEADWISE_TEST_SEED");
    seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("%d ranks, thread level %d; seed %llu (HEADWISE_TEST_SEED=%llu repeats it)\n",
                session->size(), session->thread_level(), seed, seed);
    std::fflush(stdout);
  }
  MPI_Bcast(&seed, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  headwise::testing::g_seed = seed;

  const int rc = RUN_ALL_TESTS();
  int passed = rc == 0 ? 1 : 0, all_passed = 0;
  MPI_Allreduce(&passed, &all_passed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (session->rank() == 0) {
    std::printf("%s on all %d ranks\n", all_passed ? "PASSED" : "FAILED", session->size());
    std::fflush(stdout);
  }
  if (absl::Status s = session->Finalize(); !s.ok()) {
    std::fprintf(stderr, "[rank %d] %s\n", headwise::testing::g_rank, s.ToString().c_str());
    return 1;
  }
  return all_passed ? 0 : 1;
}
