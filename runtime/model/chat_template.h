// Chat prompt formatting from a GGUF's tokenizer.chat_template without a Jinja
// engine: the template text is recognised as one of the families below and the
// conversation is rendered exactly as that template would render it, with the
// template's own constants (default system prompt, knowledge/today dates) read
// from its text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace headwise::model {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatTemplateFamily {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n  (SmolLM2, Qwen2)
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
};

struct ChatTemplateInfo {
  ChatTemplateFamily family = ChatTemplateFamily::kChatMl;
  // ChatML: system prompt the template inserts when the first message is not
  // a system message (SmolLM2, Qwen2.5); empty when it inserts none.
  std::string default_system;
  // Llama 3.1+: the template always opens with a system block carrying
  // "Cutting Knowledge Date: <knowledge_date>\nToday Date: <today_date>\n\n".
  bool llama3_dated_system = false;
  std::string knowledge_date;
  std::string today_date;  // the template's fixed fallback date, never the clock
};

// Recognises the template family. Unimplemented (quoting the template's start)
// for anything else, including an empty template.
absl::StatusOr<ChatTemplateInfo> DetectChatTemplate(std::string_view gguf_template);

// Renders `msgs` as the template would, then the assistant header when
// add_generation_prompt. The result never contains BOS (Llama-3 templates emit
// bos_token first): tokenize it with Encode(text, /*add_special=*/true,
// /*parse_special=*/true) so BOS is added where the GGUF says so.
absl::StatusOr<std::string> ApplyChatTemplate(std::string_view gguf_template,
                                              const std::vector<ChatMessage>& msgs,
                                              bool add_generation_prompt);

}  // namespace headwise::model
