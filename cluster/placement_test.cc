#include "cluster/placement.h"

#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::cluster {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kBlock = 1024;

TEST(PlacementTest, ParsesPolicyNames) {
  EXPECT_EQ(ParsePlacement("head-major"), PlacementPolicy::kHeadMajor);
  EXPECT_EQ(ParsePlacement("striped"), PlacementPolicy::kStriped);
  EXPECT_FALSE(ParsePlacement("random").has_value());
  EXPECT_STREQ(PlacementName(PlacementPolicy::kStriped), "striped");
}

TEST(PlacementTest, HeadMajorKeepsEachHeadOnOneRankAndSpreadsHeads) {
  auto plan = PlacementPlan::Create(PlacementPolicy::kHeadMajor, 30, 3, kBlock,
                                    std::vector<int64_t>(4, 1000 * kBlock));
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<int32_t, int> per_rank;
  for (int32_t layer = 0; layer < 30; ++layer) {
    for (int32_t head = 0; head < 3; ++head) {
      const int32_t first = plan->Place(layer, head, 0)->rank;
      for (int32_t block = 1; block < 8; ++block) {
        EXPECT_EQ(plan->Place(layer, head, block)->rank, first) << layer << "/" << head;
      }
      ++per_rank[first];
    }
  }
  ASSERT_EQ(per_rank.size(), 4u);  // 90 (layer, head) pairs over 4 ranks
  for (auto [rank, heads] : per_rank) EXPECT_GE(heads, 22) << "rank " << rank;
  EXPECT_EQ(plan->spilled_blocks(), 0);
}

TEST(PlacementTest, StripedDealsBlocksRoundRobin) {
  auto plan = PlacementPlan::Create(PlacementPolicy::kStriped, 2, 2, kBlock,
                                    std::vector<int64_t>(3, 100 * kBlock));
  ASSERT_TRUE(plan.ok());
  for (int32_t block = 0; block < 12; ++block) {
    EXPECT_EQ(plan->Place(1, 0, block)->rank, block % 3);
    EXPECT_EQ(plan->Place(1, 1, block)->rank, (block + 1) % 3);
  }
  for (int32_t r = 0; r < 3; ++r) EXPECT_EQ(plan->used_bytes(r), 8 * kBlock);
}

TEST(PlacementTest, FullRankSpillsToTheNextWithRoom) {
  auto plan =
      PlacementPlan::Create(PlacementPolicy::kHeadMajor, 1, 1, kBlock, {2 * kBlock, 0, 3 * kBlock});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Place(0, 0, 0)->rank, 0);
  EXPECT_EQ(plan->Place(0, 0, 1)->rank, 0);
  EXPECT_EQ(plan->Place(0, 0, 2)->rank, 2);  // rank 0 full, rank 1 has no pool
  EXPECT_EQ(plan->Place(0, 0, 1)->rank, 0);  // already placed: same home, no charge
  EXPECT_EQ(plan->spilled_blocks(), 1);
  EXPECT_EQ(plan->HomeOf(0, 0, 2)->rank, 2);
  EXPECT_FALSE(plan->HomeOf(0, 0, 9).has_value());
}

TEST(PlacementTest, FullClusterIsResourceExhaustedWithTheNumbers) {
  auto plan = PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, kBlock, {kBlock, kBlock});
  ASSERT_TRUE(plan.ok());
  ASSERT_TRUE(plan->Place(0, 0, 0).ok());
  ASSERT_TRUE(plan->Place(0, 0, 1).ok());
  auto full = plan->Place(0, 0, 2);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()),
              HasSubstr("rank 0 1024 bytes of 1024 bytes, rank 1 1024 bytes of 1024 bytes"));
  plan->Release(0, 0, 0);
  EXPECT_EQ(plan->Place(0, 0, 2)->rank, 0);  // room again after a release
}

TEST(PlacementTest, RejectsBadShapes) {
  EXPECT_FALSE(PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, kBlock, {}).ok());
  EXPECT_FALSE(PlacementPlan::Create(PlacementPolicy::kStriped, 0, 1, kBlock, {kBlock}).ok());
  EXPECT_FALSE(PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, kBlock, {-1}).ok());
  auto plan = PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, kBlock, {kBlock});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Place(1, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlacementTest, SlotsArePerRankAndReusedLowestFirst) {
  auto plan =
      PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, kBlock, {4 * kBlock, 4 * kBlock});
  ASSERT_TRUE(plan.ok());
  for (int32_t block = 0; block < 6; ++block) ASSERT_TRUE(plan->Place(0, 0, block).ok());
  EXPECT_EQ(plan->HomeOf(0, 0, 0)->slot, 0);  // rank 0
  EXPECT_EQ(plan->HomeOf(0, 0, 1)->slot, 0);  // rank 1
  EXPECT_EQ(plan->HomeOf(0, 0, 4)->slot, 2);  // rank 0's third block
  EXPECT_EQ(plan->HomeOf(0, 0, 9).has_value(), false);
  plan->Release(0, 0, 2);
  plan->Release(0, 0, 0);
  EXPECT_EQ(plan->peak_bytes(0), 3 * kBlock);
  ASSERT_EQ(plan->Place(0, 0, 6)->rank, 0);
  EXPECT_EQ(plan->HomeOf(0, 0, 6)->slot, 0);
  ASSERT_EQ(plan->Place(0, 0, 8)->rank, 0);
  EXPECT_EQ(plan->HomeOf(0, 0, 8)->slot, 1);
  EXPECT_EQ(plan->used_bytes(0), 3 * kBlock);
}

TEST(PlacementTest, FullHostDemotesTheColdestBlockToTheRanksDisk) {
  auto ledger = PoolLedger::Create(kBlock, {2 * kBlock, 2 * kBlock}, {3 * kBlock, 0});
  ASSERT_TRUE(ledger.ok());
  auto plan = PlacementPlan::Create(PlacementPolicy::kHeadMajor, 1, 2, *ledger);
  ASSERT_TRUE(plan.ok());
  // Head 0 prefers rank 0: two blocks fill its host pool.
  EXPECT_EQ(*plan->Place(0, 0, 0), (BlockHome{0, PoolTier::kHost, 0}));
  EXPECT_EQ(*plan->Place(0, 0, 1), (BlockHome{0, PoolTier::kHost, 1}));
  EXPECT_TRUE(plan->TakeDemotions().empty());
  // The third takes block 0's host slot; block 0 goes to disk slot 0.
  EXPECT_EQ(*plan->Place(0, 0, 2), (BlockHome{0, PoolTier::kHost, 0}));
  EXPECT_EQ(*plan->HomeOf(0, 0, 0), (BlockHome{0, PoolTier::kDisk, 0}));
  std::vector<Demotion> moved = plan->TakeDemotions();
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(moved[0].layer, 0);
  EXPECT_EQ(moved[0].kv_head, 0);
  EXPECT_EQ(moved[0].block, 0);
  EXPECT_EQ(moved[0].host_slot, 0);
  EXPECT_EQ(moved[0].disk_slot, 0);
  EXPECT_TRUE(plan->TakeDemotions().empty());
  // Then block 1 (the coldest still in RAM), then block 2.
  EXPECT_EQ(plan->Place(0, 0, 3)->slot, 1);
  EXPECT_EQ(*plan->HomeOf(0, 0, 1), (BlockHome{0, PoolTier::kDisk, 1}));
  EXPECT_EQ(plan->Place(0, 0, 4)->slot, 0);
  EXPECT_EQ(*plan->HomeOf(0, 0, 2), (BlockHome{0, PoolTier::kDisk, 2}));
  EXPECT_EQ(plan->used_bytes(0, PoolTier::kDisk), 3 * kBlock);
  // Rank 0 is full on both tiers: the next block spills to rank 1's host.
  EXPECT_EQ(*plan->Place(0, 0, 5), (BlockHome{1, PoolTier::kHost, 0}));
  EXPECT_EQ(plan->demoted_blocks(), 3);
  EXPECT_EQ(plan->spilled_blocks(), 1);
  // Releasing a disk block frees its disk slot.
  plan->Release(0, 0, 1);
  EXPECT_EQ(plan->used_bytes(0, PoolTier::kDisk), 2 * kBlock);
  EXPECT_EQ(plan->Place(0, 0, 6)->tier, PoolTier::kHost);
  EXPECT_EQ(*plan->HomeOf(0, 0, 3), (BlockHome{0, PoolTier::kDisk, 1}));
}

TEST(PlacementTest, FullClusterNamesHostAndDisk) {
  auto ledger = PoolLedger::Create(kBlock, {kBlock}, {kBlock});
  ASSERT_TRUE(ledger.ok());
  auto plan = PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, *ledger);
  ASSERT_TRUE(plan->Place(0, 0, 0).ok());
  ASSERT_TRUE(plan->Place(0, 0, 1).ok());
  auto full = plan->Place(0, 0, 2);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()),
              HasSubstr("rank 0 1024 bytes of 1024 bytes host + 1024 bytes of 1024 bytes disk"));
}

TEST(PlacementTest, PlaceOnKeepsTheRankAndFillsHostThenDisk) {
  auto ledger = PoolLedger::Create(kBlock, {8 * kBlock, kBlock}, {0, kBlock});
  ASSERT_TRUE(ledger.ok());
  auto plan = PlacementPlan::Create(PlacementPolicy::kStriped, 1, 1, *ledger);
  EXPECT_EQ(*plan->PlaceOn(0, 0, 0, 1), (BlockHome{1, PoolTier::kHost, 0}));
  EXPECT_EQ(*plan->PlaceOn(0, 0, 1, 1), (BlockHome{1, PoolTier::kDisk, 0}));  // host full
  EXPECT_EQ(*plan->PlaceOn(0, 0, 1, 0), (BlockHome{1, PoolTier::kDisk, 0}));  // already placed
  auto full = plan->PlaceOn(0, 0, 2, 1);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()), HasSubstr("rank 1 has no room"));
  EXPECT_TRUE(plan->TakeDemotions().empty());
}

}  // namespace
}  // namespace headwise::cluster
