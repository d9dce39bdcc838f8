// Shared pieces of the multi-rank GoogleTest binaries (run under mpirun): the
// MPI-initialising main lives in mpi_test_main.cc; tests reach the world and
// the run's seed (fresh per run, chosen by rank 0, broadcast) through here.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>

#include "absl/status/status.h"

// ASSERT/EXPECT that an absl::Status expression is OK, printing it if not.
#define HW_ASSERT_OK(expr)                      \
  do {                                          \
    const ::absl::Status hw_status_ = (expr);   \
    ASSERT_TRUE(hw_status_.ok()) << hw_status_; \
  } while (false)
#define HW_EXPECT_OK(expr)                      \
  do {                                          \
    const ::absl::Status hw_status_ = (expr);   \
    EXPECT_TRUE(hw_status_.ok()) << hw_status_; \
  } while (false)

namespace headwise::testing {

int Rank();
int Size();
// Same on every rank; printed by rank 0; HEADWISE_TEST_SEED=N repeats a run.
uint64_t Seed();

// Base fixture: after each test the ranks agree on the outcome, so a failure
// on any rank fails the test on every rank (naming the failing ranks). Tests
// must reach every collective on every rank: prefer EXPECT_* to ASSERT_*
// before a collective.
class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override;
};

}  // namespace headwise::testing
