// The fidelity harness's pieces (`headwise eval`, docs/FIDELITY.md): a
// context is prefilled once, exactly, into a store that keeps every
// policy's key summaries; then each policy under test continues it (decode
// steps are where policies differ) and the store is cut back, so every
// policy answers from the same KV. Passkey retrieval asks for a number
// hidden at a depth of a filler document (the long-context papers' needle
// test); position bands compare next-token distributions with exact's on a
// fixed text, teacher-forced.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/generator.h"
#include "runtime/kv/kv_store.h"
#include "runtime/model/llama.h"
#include "runtime/model/tokenizer.h"

namespace headwise::engine {

struct PolicyUnderTest {
  std::string label;  // "exact", "hybrid@0.25", ...
  kv::AttentionPolicy policy;
};

// "exact", "hybrid@0.25", "hybrid:bounds@0.25", "hybrid:pooled@0.125",
// "quantkv@0.125": the kind, hybrid's options (keys or bounds: the block
// summary; pooled: heads share the budget), and the budget (hybrid:
// attended fraction; quantkv: KV kept); other knobs come from `base`.
// InvalidArgument naming a bad spec.
absl::StatusOr<PolicyUnderTest> ParsePolicySpec(std::string_view spec,
                                                const kv::AttentionPolicy& base);

// The passkey prompt: a document of about `tokens` tokens (the chat
// template's included) of filler with "The pass key is KEY." at `depth`
// (0: the start, 1: the end) and the question after it, in the model's chat
// template when it has one.
absl::StatusOr<std::vector<int32_t>> PasskeyPrompt(const model::LlamaModel& llm,
                                                   const model::Tokenizer& tokenizer,
                                                   int64_t tokens, double depth,
                                                   const std::string& key);

struct Continuation {
  std::string text;
  std::vector<int32_t> tokens;
  double decode_seconds = 0;
  attention::StreamStats stream;
};

// Greedy continuation of `store` (which holds a prompt but its last token,
// `last`) under `policy` for up to `max_tokens` tokens or the end of
// generation; the store is cut back to where it was afterwards. `options`
// supplies everything else (its policy and max_tokens are ignored).
absl::StatusOr<Continuation> ContinueUnder(model::LlamaModel& llm,
                                           const model::Tokenizer& tokenizer, kv::KvStore& store,
                                           int32_t last, const kv::AttentionPolicy& policy,
                                           int32_t max_tokens, const GenerateOptions& options);

// Feeds `tokens` to `store` one at a time under `policy` and returns the
// log-softmax of the next-token distribution after each; the store is cut
// back afterwards.
absl::StatusOr<std::vector<std::vector<float>>> TeacherForced(model::LlamaModel& llm,
                                                              kv::KvStore& store,
                                                              std::span<const int32_t> tokens,
                                                              const kv::AttentionPolicy& policy);

// KL(p || q) in nats for log-probabilities p and q of one distribution.
double KlDivergence(std::span<const float> log_p, std::span<const float> log_q);
// The index of the largest value (the first of ties).
int32_t Argmax(std::span<const float> values);

}  // namespace headwise::engine
