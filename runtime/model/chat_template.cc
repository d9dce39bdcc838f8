// Chat template families rendered by hand. Constants are read out of the
// template text itself, so e.g. SmolLM2's default system prompt is exactly the
// one in its GGUF; anything the renderer cannot reproduce is an error, never an
// approximation.
#include "runtime/model/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/unicode.h"

namespace headwise::model {
namespace {

// Jinja string literals in GGUF templates may hold a real newline or the
// two-character escape; this undoes the escapes Jinja would.
std::string UnescapeJinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char n = s[++i];
      out.push_back(n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Length of a newline at s[pos] (a real one or the "\n" escape), 0 if none.
size_t NewlineAt(std::string_view s, size_t pos) {
  if (s.substr(pos).starts_with("\n")) return 1;
  if (s.substr(pos).starts_with("\\n")) return 2;
  return 0;
}

// The constant text after `marker` up to `end`, if it is a plain literal: no
// quote, expression or newline-escape boundary in between. Linear in the
// template: the next `end` and the next non-literal character only move
// forward from one marker to the next, so each is searched for once per
// position, not once per marker (a template is file content: thousands of
// markers without an end must not cost quadratic time on every request).
std::string LiteralAfter(std::string_view tmpl, std::string_view marker, std::string_view end) {
  constexpr std::string_view kNotLiteral = "'\"{}+";
  size_t stop = 0;     // first `end` at or after the current start
  size_t special = 0;  // first kNotLiteral character at or after the current start
  for (size_t at = tmpl.find(marker); at != std::string_view::npos;
       at = tmpl.find(marker, at + 1)) {
    const size_t start = at + marker.size();
    if (stop < start) stop = tmpl.find(end, start);
    if (stop == std::string_view::npos) break;  // no later marker has an end either
    if (special < start) special = tmpl.find_first_of(kNotLiteral, start);
    if (stop == start || special < stop) continue;
    return UnescapeJinja(tmpl.substr(start, stop - start));
  }
  return "";
}

// Jinja's |trim (Python str.strip(): Unicode whitespace and U+001C..U+001F).
std::string Trim(std::string_view s) {
  auto space = [](uint32_t cp) { return IsWhitespace(cp) || (cp >= 0x1C && cp <= 0x1F); };
  size_t begin = 0, end = s.size();
  while (begin < end) {
    size_t next = begin;
    if (!space(DecodeUtf8(s, &next))) break;
    begin = next;
  }
  while (end > begin) {
    size_t start = end - 1;  // back up to the start of the last character
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t next = start;
    if (!space(DecodeUtf8(s, &next)) || next != end) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::string RenderChatMl(const ChatTemplateInfo& info, const std::vector<ChatMessage>& msgs,
                         bool add_generation_prompt) {
  std::string out;
  if (!msgs.empty() && msgs[0].role != "system" && !info.default_system.empty()) {
    absl::StrAppend(&out, "<|im_start|>system\n", info.default_system, "<|im_end|>\n");
  }
  for (const ChatMessage& m : msgs) {
    absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

absl::StatusOr<std::string> RenderLlama3(const ChatTemplateInfo& info,
                                         const std::vector<ChatMessage>& msgs,
                                         bool add_generation_prompt) {
  auto header = [](std::string_view role) {
    return absl::StrCat("<|start_header_id|>", std::string(role), "<|end_header_id|>\n\n");
  };
  std::string out;
  size_t first = 0;
  if (info.llama3_dated_system) {
    std::string system;
    if (!msgs.empty() && msgs[0].role == "system") {
      system = Trim(msgs[0].content);
      first = 1;
    }
    absl::StrAppend(&out, header("system"), "Cutting Knowledge Date: ", info.knowledge_date,
                    "\nToday Date: ", info.today_date, "\n\n", system, "<|eot_id|>");
  }
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (info.llama3_dated_system && (m.role == "tool" || m.role == "ipython")) {
      return absl::UnimplementedError(
          absl::StrCat("chat message ", i, ": role '", m.role,
                       "' (tool output) is not supported for Llama-3.1-style templates"));
    }
    absl::StrAppend(&out, header(m.role), Trim(m.content), "<|eot_id|>");
  }
  if (add_generation_prompt) out += header("assistant");
  return out;
}

}  // namespace

absl::StatusOr<ChatTemplateInfo> DetectChatTemplate(std::string_view tmpl) {
  ChatTemplateInfo info;
  if (tmpl.find("<|im_start|>") != std::string_view::npos) {
    info.family = ChatTemplateFamily::kChatMl;
    // e.g. SmolLM2: {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }} when the
    // first message is not a system message.
    for (std::string_view newline : {"\n", "\\n"}) {
      if (info.default_system.empty()) {
        info.default_system = LiteralAfter(
            tmpl, absl::StrCat("<|im_start|>system", std::string(newline)), "<|im_end|>");
      }
    }
    return info;
  }
  if (tmpl.find("<|start_header_id|>") != std::string_view::npos) {
    info.family = ChatTemplateFamily::kLlama3;
    const std::string_view knowledge = "Cutting Knowledge Date: ";
    if (const size_t at = tmpl.find(knowledge); at != std::string_view::npos) {
      info.llama3_dated_system = true;
      size_t end = at + knowledge.size();
      while (end < tmpl.size() && NewlineAt(tmpl, end) == 0 && tmpl[end] != '"') ++end;
      info.knowledge_date =
          std::string(tmpl.substr(at + knowledge.size(), end - at - knowledge.size()));
      info.today_date = LiteralAfter(tmpl, "set date_string = \"", "\"");
      if (info.today_date.empty()) info.today_date = "26 Jul 2024";
    }
    return info;
  }
  std::string start(tmpl.substr(0, 80));
  return absl::UnimplementedError(
      tmpl.empty() ? std::string("the model has no chat template")
                   : absl::StrCat("chat template not recognised (supported: ChatML, Llama-3): '",
                                  start, tmpl.size() > 80 ? "...'" : "'"));
}

absl::StatusOr<std::string> ApplyChatTemplate(std::string_view gguf_template,
                                              const std::vector<ChatMessage>& msgs,
                                              bool add_generation_prompt) {
  absl::StatusOr<ChatTemplateInfo> info = DetectChatTemplate(gguf_template);
  if (!info.ok()) return info.status();
  if (info->family == ChatTemplateFamily::kChatMl) {
    return RenderChatMl(*info, msgs, add_generation_prompt);
  }
  return RenderLlama3(*info, msgs, add_generation_prompt);
}

}  // namespace headwise::model
