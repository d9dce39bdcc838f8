// Fuzzes chat-template detection and rendering. Input: a flags byte, then
// NUL-separated fields. Flags bits 1-2 pick the template: 0 = the first field
// (a fuzzed template), 1..3 = SmolLM2's ChatML, Llama 3 and Llama 3.1 texts;
// the remaining fields are role, content, role, content, ... Bit 0 asks for the
// generation prompt. Invariants: a rendered prompt carries each message's role
// header and ends with the assistant header when one was asked for.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/chat_template.h"

namespace {

using headwise::model::ChatMessage;
using headwise::model::ChatTemplateFamily;
using headwise::model::ChatTemplateInfo;

// SmolLM2-135M-Instruct's tokenizer.chat_template (real newlines in literals).
constexpr std::string_view kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

// Meta-Llama-3-8B-Instruct.
constexpr std::string_view kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// The parts of Llama-3.1-8B-Instruct's template the renderer reads.
constexpr std::string_view kLlama31Template =
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul "
    "2024\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + "
    "\"\\n\\n\" }}\n{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}";

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "chat_template_fuzzer: invariant violated: %s\n", what);
    std::abort();
  }
}

std::vector<std::string_view> SplitFields(std::string_view s) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  for (size_t nul = s.find('\0'); nul != std::string_view::npos; nul = s.find('\0', start)) {
    fields.push_back(s.substr(start, nul - start));
    start = nul + 1;
  }
  fields.push_back(s.substr(start));
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const bool add_generation_prompt = flags & 1;
  std::vector<std::string_view> fields =
      SplitFields(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  std::string_view tmpl;
  size_t first_message = 0;
  switch ((flags >> 1) & 3) {
    case 0:
      tmpl = fields[0];
      first_message = 1;
      break;
    case 1:
      tmpl = kSmolLm2Template;
      break;
    case 2:
      tmpl = kLlama3Template;
      break;
    default:
      tmpl = kLlama31Template;
      break;
  }
  std::vector<ChatMessage> msgs;
  for (size_t i = first_message; i < fields.size(); i += 2) {
    msgs.push_back({std::string(fields[i]),
                    i + 1 < fields.size() ? std::string(fields[i + 1]) : std::string()});
  }

  const absl::StatusOr<ChatTemplateInfo> info = headwise::model::DetectChatTemplate(tmpl);
  const absl::StatusOr<std::string> text =
      headwise::model::ApplyChatTemplate(tmpl, msgs, add_generation_prompt);
  Check(info.ok() || !text.ok(),
        "ApplyChatTemplate rendered a template DetectChatTemplate rejects");
  if (!info.ok()) {
    Check(!info.status().message().empty(), "rejection without a message");
    return 0;
  }
  if (!text.ok()) return 0;
  if (info->family == ChatTemplateFamily::kChatMl) {
    Check(tmpl.find("<|im_start|>") != std::string_view::npos, "ChatML without <|im_start|>");
    size_t at = 0;
    for (const ChatMessage& m : msgs) {
      at = text->find("<|im_start|>" + m.role + "\n", at);
      Check(at != std::string::npos, "a ChatML message header is missing or out of order");
      ++at;
    }
    if (add_generation_prompt) {
      Check(text->ends_with("<|im_start|>assistant\n"), "ChatML prompt does not end the header");
    }
  } else {
    Check(tmpl.find("<|start_header_id|>") != std::string_view::npos,
          "Llama 3 without <|start_header_id|>");
    const std::string_view header_end = "<|end_header_id|>\n\n";
    size_t at = 0;
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (i == 0 && info->llama3_dated_system && msgs[0].role == "system") continue;
      at = text->find("<|start_header_id|>" + msgs[i].role + std::string(header_end), at);
      Check(at != std::string::npos, "a Llama 3 message header is missing or out of order");
      ++at;
    }
    if (add_generation_prompt) {
      Check(text->ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"),
            "Llama 3 prompt does not end with the assistant header");
    }
  }
  return 0;
}
