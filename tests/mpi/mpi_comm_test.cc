// comm/mpi.h under several ranks: the session's view of the world, MPI errors
// coming back as Status (MPI_ERRORS_RETURN), communicator duplication and
// AllgatherBlobs with uneven and empty blobs. Run with 3 ranks.
#include "comm/mpi.h"

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tests/mpi/mpi_test_env.h"

namespace headwise::comm {
namespace {

using headwise::testing::MpiTest;
using headwise::testing::Rank;
using headwise::testing::Seed;
using headwise::testing::Size;

class MpiCommTest : public MpiTest {};

TEST_F(MpiCommTest, SecondSessionAdoptsRunningMpi) {
  absl::StatusOr<MpiSession> again = MpiSession::Init(nullptr, nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->owns_mpi()) << "must not finalize an MPI it did not start";
  EXPECT_EQ(again->rank(), Rank());
  EXPECT_EQ(again->size(), Size());
  EXPECT_GE(again->thread_level(), MPI_THREAD_SINGLE);
  HW_EXPECT_OK(again->Finalize());  // a no-op: MPI keeps running
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_EQ(finalized, 0);
}

TEST_F(MpiCommTest, ErrorsComeBackAsStatusNamingTheCall) {
  int value = 0;
  // An invalid root is caught locally by every rank before communicating.
  const absl::Status s = MpiStatus(MPI_Bcast(&value, 1, MPI_INT, Size() + 5, MPI_COMM_WORLD),
                                   "MPI_Bcast(root=size+5)");
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("MPI_Bcast(root=size+5)"), std::string_view::npos) << s;
  EXPECT_TRUE(MpiStatus(MPI_SUCCESS, "x").ok());
}

TEST_F(MpiCommTest, DupGivesAnIndependentCommunicator) {
  absl::StatusOr<MpiComm> comm = MpiComm::Dup(MPI_COMM_WORLD);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ(comm->rank(), Rank());
  EXPECT_EQ(comm->size(), Size());
  MpiComm moved = std::move(*comm);
  EXPECT_EQ(comm->get(), MPI_COMM_NULL);
  int sum = 0, one = 1;
  HW_EXPECT_OK(
      MpiStatus(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, moved.get()), "MPI_Allreduce"));
  EXPECT_EQ(sum, Size());
}

TEST_F(MpiCommTest, AllgatherBlobsUnevenAndEmpty) {
  // Rank r contributes (r * 37 + seed) % 1000 bytes, rank 1 nothing; byte i of
  // rank r's blob is (r * 31 + i) mod 256.
  auto blob_size = [](int r) -> size_t { return r == 1 ? 0 : (r * 37 + Seed()) % 1000 + 1; };
  std::vector<std::byte> mine(blob_size(Rank()));
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<std::byte>(Rank() * 31 + i);
  absl::StatusOr<std::vector<std::vector<std::byte>>> all = AllgatherBlobs(mine, MPI_COMM_WORLD);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(Size()));
  for (int r = 0; r < Size(); ++r) {
    const std::vector<std::byte>& blob = (*all)[r];
    ASSERT_EQ(blob.size(), blob_size(r)) << "rank " << r;
    for (size_t i = 0; i < blob.size(); ++i) {
      ASSERT_EQ(blob[i], static_cast<std::byte>(r * 31 + i)) << "rank " << r << " byte " << i;
    }
  }
}

TEST_F(MpiCommTest, AllgatherBlobsAllEmpty) {
  absl::StatusOr<std::vector<std::vector<std::byte>>> all = AllgatherBlobs({}, MPI_COMM_WORLD);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(Size()));
  for (const auto& blob : *all) EXPECT_TRUE(blob.empty());
}

}  // namespace
}  // namespace headwise::comm
