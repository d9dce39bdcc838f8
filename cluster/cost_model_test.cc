#include "cluster/cost_model.h"

#include "gtest/gtest.h"

namespace headwise::cluster {
namespace {

TEST(CostModelTest, ParsesModeNames) {
  EXPECT_EQ(ParseExecMode("pull"), ExecMode::kPull);
  EXPECT_EQ(ParseExecMode("delegate"), ExecMode::kDelegate);
  EXPECT_EQ(ParseExecMode("auto"), ExecMode::kAuto);
  EXPECT_FALSE(ParseExecMode("push").has_value());
  EXPECT_STREQ(ExecModeName(ExecMode::kDelegate), "delegate");
}

TEST(CostModelTest, SlowLinkDelegatesFastLinkToAFastCoordinatorPulls) {
  CostModel model;
  model.ranks = {{0, 0, 10.0}, {1.0, 50e-6, 10.0}, {100.0, 5e-6, 0.5}};
  const int64_t kv = 64 << 20, msg = 16 << 10;
  // Rank 1: the link is 10x slower than memory: moving KV loses.
  EXPECT_EQ(model.Choose(ExecMode::kAuto, 1, kv, msg), ExecMode::kDelegate);
  EXPECT_GT(model.PullSeconds(1, kv), model.DelegateSeconds(1, kv, msg));
  // Rank 2: a fast link and a slow remote kernel: pull to the coordinator.
  EXPECT_EQ(model.Choose(ExecMode::kAuto, 2, kv, msg), ExecMode::kPull);
  // A pinned mode wins over the estimate.
  EXPECT_EQ(model.Choose(ExecMode::kPull, 1, kv, msg), ExecMode::kPull);
  // No probes: delegate (it moves no KV).
  EXPECT_EQ(CostModel{}.Choose(ExecMode::kAuto, 1, kv, msg), ExecMode::kDelegate);
  EXPECT_NE(model.Describe().find("rank 2: attention 0.50 GB/s, link 100.00 GB/s"),
            std::string::npos);
}

}  // namespace
}  // namespace headwise::cluster
