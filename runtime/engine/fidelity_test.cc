// The fidelity harness's small pieces: policy specs, KL, argmax.
#include "runtime/engine/fidelity.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace headwise::engine {
namespace {

TEST(FidelityTest, PolicySpecsNameAKindAndItsBudget) {
  kv::AttentionPolicy base;
  base.window_tokens = 64;
  absl::StatusOr<PolicyUnderTest> quarter = ParsePolicySpec("quantkv@0.25", base);
  ASSERT_TRUE(quarter.ok()) << quarter.status();
  EXPECT_EQ(quarter->label, "quantkv@0.25");
  EXPECT_EQ(quarter->policy.kind, kv::AttentionPolicy::Kind::kQuantKv);
  EXPECT_DOUBLE_EQ(quarter->policy.budget, 0.25);
  EXPECT_EQ(quarter->policy.window_tokens, 64);  // from the base
  absl::StatusOr<PolicyUnderTest> exact = ParsePolicySpec("exact", base);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->policy.kind, kv::AttentionPolicy::Kind::kExact);
  absl::StatusOr<PolicyUnderTest> bounds = ParsePolicySpec("hybrid:bounds@0.125", base);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_EQ(bounds->policy.kind, kv::AttentionPolicy::Kind::kHybrid);
  EXPECT_EQ(bounds->policy.summary, kv::AttentionPolicy::BlockSummary::kBounds);
  EXPECT_DOUBLE_EQ(bounds->policy.budget, 0.125);
  EXPECT_EQ(ParsePolicySpec("hybrid@0.25", base)->policy.summary,
            kv::AttentionPolicy::BlockSummary::kKeys);
  absl::StatusOr<PolicyUnderTest> pooled = ParsePolicySpec("hybrid:keys:pooled@0.125", base);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_TRUE(pooled->policy.pool_heads);
  EXPECT_EQ(pooled->policy.summary, kv::AttentionPolicy::BlockSummary::kKeys);
  for (const char* bad :
       {"quest@0.25", "hybrid@", "hybrid@x", "hybrid@2", "exact@0.5", "hybrid:means@0.25",
        "quantkv:keys@0.25", "exact:bounds", "hybrid:bounds:pooled@0.25", "quantkv:pooled"}) {
    EXPECT_EQ(ParsePolicySpec(bad, base).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(FidelityTest, KlIsZeroForEqualDistributionsAndMatchesTheFormula) {
  const std::vector<float> p = {std::log(0.5f), std::log(0.25f), std::log(0.25f)};
  const std::vector<float> q = {std::log(0.25f), std::log(0.25f), std::log(0.5f)};
  EXPECT_NEAR(KlDivergence(p, p), 0.0, 1e-12);
  // 0.5 log(0.5/0.25) + 0.25 log(1) + 0.25 log(0.25/0.5) = 0.25 log 2
  EXPECT_NEAR(KlDivergence(p, q), 0.25 * std::log(2.0), 1e-6);
  EXPECT_EQ(Argmax(p), 0);
  EXPECT_EQ(Argmax(q), 2);
}

}  // namespace
}  // namespace headwise::engine
