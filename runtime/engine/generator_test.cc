// The generation loop on the real model (skips without it): end-of-generation
// tokens stop it, stop strings cut the text and are never streamed, streamed
// pieces add up to the text, seeds make sampling repeatable, and impossible
// requests fail with clear errors.
#include "runtime/engine/generator.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/common/thread_pool.h"
#include "runtime/model/chat_template.h"

namespace headwise::engine {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModel)) return;
    pool_ = new runtime::ThreadPool(0);
    auto llm = model::LlamaModel::Load(kModel, pool_);
    ASSERT_TRUE(llm.ok()) << llm.status();
    auto tokenizer = model::Tokenizer::FromGguf((*llm)->file());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    llm_ = llm->release();
    tokenizer_ = new model::Tokenizer(std::move(*tokenizer));
    device_ = device::MakeCpuDevice(pool_).release();
  }
  void SetUp() override {
    if (llm_ == nullptr) GTEST_SKIP() << kModel << " not found; run scripts/fetch-model";
    options_.device = device_;
  }
  std::vector<int32_t> Encode(const std::string& text) {
    return tokenizer_->Encode(text, true, true);
  }
  absl::StatusOr<GenerateResult> Run(const std::string& text, std::string* streamed = nullptr) {
    return Generate(*llm_, *tokenizer_, Encode(text), options_, [streamed](std::string_view piece) {
      if (streamed != nullptr) streamed->append(piece);
    });
  }

  static inline runtime::ThreadPool* pool_ = nullptr;
  static inline model::LlamaModel* llm_ = nullptr;
  static inline model::Tokenizer* tokenizer_ = nullptr;
  static inline device::Device* device_ = nullptr;
  GenerateOptions options_;
};

TEST_F(GeneratorTest, ChatAnswerStopsAtEndOfTurn) {
  auto chat_template = llm_->file().GetString("tokenizer.chat_template");
  ASSERT_TRUE(chat_template.ok());
  auto prompt =
      model::ApplyChatTemplate(*chat_template, {{"user", "What is the capital of France?"}}, true);
  ASSERT_TRUE(prompt.ok());
  options_.max_tokens = 32;
  std::string streamed;
  auto result = Run(*prompt, &streamed);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->text, "The capital of France is Paris.");
  EXPECT_EQ(streamed, result->text);
  EXPECT_EQ(result->finish_reason, FinishReason::kStop);
  EXPECT_EQ(result->generated_token_ids.size(), 7u);  // <|im_end|> is not part of the output
}

TEST_F(GeneratorTest, StopStringCutsTextAndIsNeverStreamed) {
  options_.max_tokens = 16;
  auto full = Run("The capital of France is");
  ASSERT_TRUE(full.ok());
  ASSERT_THAT(full->text, HasSubstr("answer"));
  options_.stop = {"answer", "zzz-never"};
  std::string streamed;
  auto cut = Run("The capital of France is", &streamed);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find("answer")));
  EXPECT_EQ(streamed, cut->text);
  EXPECT_EQ(cut->finish_reason, FinishReason::kStop);
}

TEST_F(GeneratorTest, LengthLimitAndZeroTokens) {
  options_.max_tokens = 3;
  auto result = Run("Once upon a time");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->generated_token_ids.size(), 3u);
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  options_.max_tokens = 0;
  result = Run("Once upon a time");
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->generated_token_ids.empty());
}

TEST_F(GeneratorTest, SeededSamplingRepeatsAndDiffersAcrossSeeds) {
  options_.max_tokens = 12;
  options_.sampling.temperature = 1.0f;
  options_.sampling.top_k = 40;
  options_.sampling.seed = 7;
  auto a = Run("My favourite animal is");
  auto b = Run("My favourite animal is");
  options_.sampling.seed = 8;
  auto c = Run("My favourite animal is");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->generated_token_ids, b->generated_token_ids);
  EXPECT_NE(a->generated_token_ids, c->generated_token_ids);
}

TEST_F(GeneratorTest, ImpossibleRequestsFailClearly) {
  options_.max_tokens = 8192;
  auto too_long = Run("Hello there");
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_long.status().message()), HasSubstr("context length of 8192"));
  options_.max_tokens = 4;
  options_.stop = {""};
  EXPECT_FALSE(Run("Hello").ok());
  options_.stop = {};
  options_.sampling.top_p = 0.0f;
  EXPECT_THAT(std::string(Run("Hello").status().message()), HasSubstr("top_p"));
  options_.sampling.top_p = 1.0f;
  EXPECT_THAT(std::string(Generate(*llm_, *tokenizer_, {}, options_, nullptr).status().message()),
              HasSubstr("empty"));
}

}  // namespace
}  // namespace headwise::engine
