#include "cluster/world.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace headwise::cluster {
namespace {

class DetectLaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kVars) unsetenv(name);
  }
  void TearDown() override {
    for (const char* name : kVars) unsetenv(name);
  }
  static constexpr const char* kVars[] = {
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",   "PMIX_SIZE",
      "OMPI_UNIVERSE_SIZE",   "SLURM_PROCID",         "SLURM_NTASKS"};
};

TEST_F(DetectLaunchTest, PlainProcessIsSingleCoordinator) {
  LaunchInfo info = DetectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kNone);
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_TRUE(info.is_coordinator());
  EXPECT_FALSE(info.is_distributed());
  EXPECT_FALSE(info.hostname.empty());
}

TEST_F(DetectLaunchTest, OpenMpiWinsOverSlurm) {
  setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("SLURM_PROCID", "0", 1);
  setenv("SLURM_NTASKS", "1", 1);
  LaunchInfo info = DetectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_FALSE(info.is_coordinator());
}

TEST_F(DetectLaunchTest, SlurmTasks) {
  setenv("SLURM_PROCID", "1", 1);
  setenv("SLURM_NTASKS", "3", 1);
  LaunchInfo info = DetectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kSlurm);
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.world_size, 3);
}

TEST_F(DetectLaunchTest, MalformedValuesAreIgnored) {
  setenv("OMPI_COMM_WORLD_RANK", "5", 1);  // rank >= size
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("SLURM_PROCID", "x", 1);
  setenv("SLURM_NTASKS", "2", 1);
  LaunchInfo info = DetectLaunch();
  EXPECT_EQ(info.launcher, Launcher::kNone);
  EXPECT_EQ(info.world_size, 1);
}

}  // namespace
}  // namespace headwise::cluster
