#include "runtime/model/sampler.h"

#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::model {
namespace {

TEST(SamplerTest, GreedyPicksArgmaxLowestIndexOnTies) {
  Sampler sampler(SamplingParams{});
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(sampler.Sample(logits, {}), 1);
}

TEST(SamplerTest, RepetitionPenaltyFlipsGreedyChoice) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  Sampler sampler(params);
  std::vector<float> logits = {1.0f, 1.5f, -0.5f};
  std::vector<int32_t> history = {1};
  EXPECT_EQ(sampler.Sample(logits, history), 0);  // 1.5 / 2 = 0.75 < 1.0
  EXPECT_FLOAT_EQ(logits[1], 0.75f);
}

TEST(SamplerTest, PenaltyMakesNegativeLogitsMoreNegative) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  Sampler sampler(params);
  std::vector<float> logits = {-1.0f, -0.9f};
  std::vector<int32_t> history = {1};
  EXPECT_EQ(sampler.Sample(logits, history), 0);  // -0.9 * 2 = -1.8
}

TEST(SamplerTest, TopKOneIsGreedy) {
  SamplingParams params;
  params.temperature = 5.0f;
  params.top_k = 1;
  params.seed = 7;
  Sampler sampler(params);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> logits = {0.0f, 0.2f, 0.1f};
    EXPECT_EQ(sampler.Sample(logits, {}), 1);
  }
}

TEST(SamplerTest, SameSeedSameDraws) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 42;
  Sampler a(params), b(params);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> la = {0.0f, 0.5f, 1.0f, 0.3f}, lb = la;
    EXPECT_EQ(a.Sample(la, {}), b.Sample(lb, {}));
  }
}

TEST(SamplerTest, TemperatureSamplingFollowsSoftmax) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 1;
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
    ++counts[sampler.Sample(logits, {})];
  }
  EXPECT_NEAR(counts[1] / double(n), 0.75, 0.02);
}

TEST(SamplerTest, TopPAndMinPCutTheTail) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 0.5f;  // the top token alone has p > 0.5
  params.seed = 3;
  Sampler top_p(params);
  params.top_p = 1.0f;
  params.min_p = 0.5f;  // others are < 0.5 * p_max
  Sampler min_p(params);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> l1 = {0.0f, 3.0f, 0.5f}, l2 = l1;
    EXPECT_EQ(top_p.Sample(l1, {}), 1);
    EXPECT_EQ(min_p.Sample(l2, {}), 1);
  }
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams params;
  params.top_p = 0.0f;
  EXPECT_THAT(ValidateSamplingParams(params).message(), ::testing::HasSubstr("top_p"));
  params = {};
  params.temperature = -1.0f;
  EXPECT_THAT(ValidateSamplingParams(params).message(), ::testing::HasSubstr("temperature"));
  params = {};
  params.min_p = 1.5f;
  EXPECT_THAT(ValidateSamplingParams(params).message(), ::testing::HasSubstr("min_p"));
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
}

}  // namespace
}  // namespace headwise::model
