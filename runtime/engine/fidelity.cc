#include "runtime/engine/fidelity.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runtime/model/chat_template.h"

namespace headwise::engine {
namespace {

constexpr std::string_view kIntro =
    "There is an important piece of information hidden inside a lot of irrelevant text. Find it "
    "and memorize it. I will quiz you about it.\n";
constexpr std::string_view kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
constexpr std::string_view kQuestion = "\nWhat is the pass key? Answer with the number only.";

std::vector<float> LogSoftmax(const std::vector<float>& logits) {
  const float m = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float x : logits) z += std::exp(double(x - m));
  const float log_z = m + static_cast<float>(std::log(z));
  std::vector<float> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_z;
  return out;
}

}  // namespace

absl::StatusOr<PolicyUnderTest> ParsePolicySpec(std::string_view spec,
                                                const kv::AttentionPolicy& base) {
  const size_t at = spec.find('@');
  const std::string_view head = spec.substr(0, at);
  const size_t colon = head.find(':');
  const std::string name(head.substr(0, colon));
  std::optional<kv::AttentionPolicy::Kind> kind = kv::ParsePolicyKind(name);
  if (!kind) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", std::string(spec),
                                                   "': the name must be exact, hybrid or quantkv"));
  }
  PolicyUnderTest out{std::string(spec), base};
  out.policy.kind = *kind;
  if (colon != std::string_view::npos) {
    const std::string options(head.substr(colon + 1));
    for (absl::string_view option : absl::StrSplit(options, ':')) {
      const std::string name(option);
      std::optional<kv::AttentionPolicy::BlockSummary> summary = kv::ParseBlockSummary(name);
      if (*kind != kv::AttentionPolicy::Kind::kHybrid || (!summary && name != "pooled")) {
        return absl::InvalidArgumentError(
            absl::StrCat("policy '", std::string(spec),
                         "': only hybrid takes options: keys or bounds (the summary), pooled "
                         "(heads share the budget)"));
      }
      if (summary) out.policy.summary = *summary;
      if (name == "pooled") out.policy.pool_heads = true;
    }
  }
  if (at != std::string_view::npos) {
    const std::string budget(spec.substr(at + 1));
    char* end = nullptr;
    out.policy.budget = std::strtod(budget.c_str(), &end);
    if (budget.empty() || *end != '\0' || *kind == kv::AttentionPolicy::Kind::kExact) {
      return absl::InvalidArgumentError(absl::StrCat(
          "policy '", std::string(spec), "': expected NAME or NAME@BUDGET (hybrid, quantkv)"));
    }
  }
  if (absl::Status s = out.policy.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy '", std::string(spec), "': ", s.message()));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> PasskeyPrompt(const model::LlamaModel& llm,
                                                   const model::Tokenizer& tokenizer,
                                                   int64_t tokens, double depth,
                                                   const std::string& key) {
  absl::StatusOr<std::string> chat_template = llm.file().GetString("tokenizer.chat_template");
  auto wrap = [&](const std::string& document) -> absl::StatusOr<std::vector<int32_t>> {
    std::string text = document;
    if (chat_template.ok()) {
      absl::StatusOr<std::string> templated =
          model::ApplyChatTemplate(*chat_template, {{"user", document}}, true);
      if (!templated.ok()) return templated.status();
      text = *templated;
    }
    return tokenizer.Encode(text, /*add_special=*/true, /*parse_special=*/true);
  };
  const std::string needle =
      absl::StrCat("The pass key is ", key, ". Remember it. ", key, " is the pass key. ");
  auto document = [&](int64_t repeats) {
    const int64_t before = std::llround(depth * double(repeats));
    std::string text(kIntro);
    for (int64_t i = 0; i < repeats; ++i) {
      if (i == before) text += needle;
      text += kFiller;
    }
    if (before >= repeats) text += needle;
    return text + std::string(kQuestion);
  };
  // Filler repeats are ~24 tokens each: size from a small probe, then trim.
  absl::StatusOr<std::vector<int32_t>> probe = wrap(document(10));
  if (!probe.ok()) return probe.status();
  const int64_t per_repeat =
      static_cast<int64_t>(tokenizer.Encode(std::string(kFiller), false, false).size());
  int64_t repeats = std::max<int64_t>(1, (tokens - int64_t(probe->size())) / per_repeat + 10);
  for (;;) {
    absl::StatusOr<std::vector<int32_t>> ids = wrap(document(repeats));
    if (!ids.ok()) return ids.status();
    if (int64_t(ids->size()) <= tokens || repeats == 1) return ids;
    repeats -= std::max<int64_t>(1, (int64_t(ids->size()) - tokens) / per_repeat);
  }
}

absl::StatusOr<Continuation> ContinueUnder(model::LlamaModel& llm,
                                           const model::Tokenizer& tokenizer, kv::KvStore& store,
                                           int32_t last, const kv::AttentionPolicy& policy,
                                           int32_t max_tokens, const GenerateOptions& options) {
  const int64_t length = store.length();
  if (absl::Status s = store.set_policy(policy); !s.ok()) return s;
  GenerateOptions run = options;
  run.max_tokens = max_tokens;
  run.on_prefill_progress = nullptr;
  absl::StatusOr<GenerateResult> result =
      GenerateOn(llm, tokenizer, store, std::span<const int32_t>(&last, 1), run, nullptr);
  if (absl::Status s = store.Truncate(length); !s.ok()) return s;
  if (!result.ok()) return result.status();
  // The one-token "prompt" is the first decode step: count it with them.
  return Continuation{result->text, result->generated_token_ids,
                      result->prefill_seconds + result->decode_seconds, result->stream};
}

absl::StatusOr<std::vector<std::vector<float>>> TeacherForced(model::LlamaModel& llm,
                                                              kv::KvStore& store,
                                                              std::span<const int32_t> tokens,
                                                              const kv::AttentionPolicy& policy) {
  const int64_t length = store.length();
  if (absl::Status s = store.set_policy(policy); !s.ok()) return s;
  std::vector<std::vector<float>> out;
  std::vector<float> logits;
  for (int32_t token : tokens) {
    absl::Status s = llm.Forward(std::span<const int32_t>(&token, 1), store, &logits);
    if (!s.ok()) {
      (void)store.Truncate(length);
      return s;
    }
    out.push_back(LogSoftmax(logits));
  }
  if (absl::Status s = store.Truncate(length); !s.ok()) return s;
  return out;
}

double KlDivergence(std::span<const float> log_p, std::span<const float> log_q) {
  double kl = 0;
  for (size_t i = 0; i < log_p.size(); ++i) {
    const double p = std::exp(double(log_p[i]));
    if (p > 0) kl += p * (double(log_p[i]) - double(log_q[i]));
  }
  return std::max(0.0, kl);
}

int32_t Argmax(std::span<const float> values) {
  return static_cast<int32_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

}  // namespace headwise::engine
