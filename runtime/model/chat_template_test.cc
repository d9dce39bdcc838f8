// Chat template tests: each family rendered from real template texts and
// compared with hand-written expected prompts (what the Jinja template renders
// through transformers' apply_chat_template, minus the leading bos_token).
#include "runtime/model/chat_template.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/gguf.h"
#include "runtime/model/tokenizer.h"

namespace headwise::model {
namespace {

using ::testing::HasSubstr;

// SmolLM2-135M-Instruct's tokenizer.chat_template, byte for byte (its string
// literals hold real newlines).
constexpr std::string_view kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

constexpr std::string_view kSmolSystem =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n";

// A plain ChatML template (no default system prompt), with "\n" escapes.
constexpr std::string_view kPlainChatMl =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant"
    "\\n' }}{% endif %}";

// Qwen2.5-style default system prompt written with escapes.
constexpr std::string_view kQwenLike =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}";

// Meta-Llama-3-8B-Instruct.
constexpr std::string_view kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// The parts of Llama-3.1-8B-Instruct's template that matter here.
constexpr std::string_view kLlama31Template =
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul "
    "2024\" %}\n{%- endif %}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set "
    "system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{{- "
    "\"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge Date: "
    "December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- "
    "system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n        {{- "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

std::string Apply(std::string_view tmpl, const std::vector<ChatMessage>& msgs, bool gen) {
  absl::StatusOr<std::string> out = ApplyChatTemplate(tmpl, msgs, gen);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : "";
}

TEST(ChatTemplateTest, SmolLm2DefaultSystemPrompt) {
  EXPECT_EQ(
      Apply(kSmolLm2Template, {{"user", "Hi there"}}, true),
      std::string(kSmolSystem) + "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Apply(kSmolLm2Template, {{"user", "Hi"}, {"assistant", " Hello! "}}, false),
            std::string(kSmolSystem) +
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n Hello! <|im_end|>\n");
}

TEST(ChatTemplateTest, SmolLm2WithSystemMessage) {
  EXPECT_EQ(Apply(kSmolLm2Template, {{"system", "Be brief."}, {"user", "2+2?"}}, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  // The default is inserted inside the message loop: none for an empty chat.
  EXPECT_EQ(Apply(kSmolLm2Template, {}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, ChatMlVariants) {
  EXPECT_EQ(Apply(kPlainChatMl, {{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  absl::StatusOr<ChatTemplateInfo> info = DetectChatTemplate(kQwenLike);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->default_system,
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

TEST(ChatTemplateTest, Llama3) {
  EXPECT_EQ(Apply(kLlama3Template, {{"system", "  Be brief.\n"}, {"user", "Hi\n"}}, true),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama31DatedSystemBlock) {
  EXPECT_EQ(Apply(kLlama31Template, {{"user", " Hi "}}, true),
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
            "2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>"
            "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Apply(kLlama31Template, {{"system", "Be brief. "}, {"user", "Hi"}}, false),
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
            "2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nHi<|eot_id|>");
  absl::StatusOr<std::string> tool =
      ApplyChatTemplate(kLlama31Template, {{"user", "x"}, {"tool", "{}"}}, false);
  EXPECT_EQ(tool.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(tool.status().message(), HasSubstr("'tool'"));
}

TEST(ChatTemplateTest, UnknownTemplateIsUnimplemented) {
  absl::StatusOr<std::string> out = ApplyChatTemplate(
      "{% for m in messages %}<start_of_turn>{{ m['role'] }}{% endfor %}", {{"user", "x"}}, true);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(out.status().message(), HasSubstr("<start_of_turn>"));
  out = ApplyChatTemplate("", {{"user", "x"}}, true);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(out.status().message(), HasSubstr("no chat template"));
}

// Regression: the default-system-prompt search was quadratic in the template
// (each "<|im_start|>system\n" searched the rest for its end and for quotes),
// so a 1 MiB GGUF template took 86 s under ASan on every chat request. Each
// shape below is 1 MiB; linear time is a few milliseconds.
TEST(ChatTemplateTest, DetectionIsLinearInTheTemplate) {
  const std::string marker = "<|im_start|>system\n";
  const size_t copies = (size_t{1} << 20) / marker.size();
  std::string no_end;
  for (size_t i = 0; i < copies; ++i) no_end += marker;
  std::string quoted;  // every literal holds a quote; one end at the very end
  for (size_t i = 0; i < copies; ++i) quoted += marker + "'";
  quoted += "<|im_end|>";
  std::string last_good = quoted + marker + "Be brief.<|im_end|>";
  const auto start = std::chrono::steady_clock::now();
  for (const std::string* tmpl : {&no_end, &quoted, &last_good}) {
    absl::StatusOr<ChatTemplateInfo> info = DetectChatTemplate(*tmpl);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->default_system, tmpl == &last_good ? "Be brief." : "");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 2.0) << "quadratic template scan";
}

TEST(ChatTemplateTest, SmolLm2FromGguf) {
  const char* path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " not found";
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<std::string> tmpl = (*gguf)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(*tmpl, kSmolLm2Template);
  const std::string prompt = Apply(*tmpl, {{"user", "What is 2+2?"}}, true);
  EXPECT_EQ(prompt, std::string(kSmolSystem) +
                        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<int32_t> ids = tok->Encode(prompt, true, true);
  ASSERT_GT(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);                            // <|im_start|>, no BOS for SmolLM2
  EXPECT_EQ(ids.back(), 198);                           // "\n" after "assistant"
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 2);  // two <|im_end|>
}

}  // namespace
}  // namespace headwise::model
