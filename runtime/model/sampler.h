// Token sampling from a row of logits: greedy, or temperature with top-k,
// top-p and min-p filters, plus a repetition penalty over recent tokens.
// Deterministic for a given seed. Not thread-safe: one Sampler per request.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace headwise::model {

struct SamplingParams {
  float temperature = 0.0f;         // <= 0: greedy (argmax)
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off; keeps p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1: off; llama.cpp semantics
  int32_t repetition_window = 64;   // last N tokens penalised
  uint64_t seed = 0;
};

// InvalidArgument naming the field for out-of-range values.
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token. `logits` is modified (penalty, temperature).
  // `history` is every token so far (prompt + generated); only its last
  // repetition_window entries are penalised.
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

  bool greedy() const { return params_.temperature <= 0.0f; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused across calls
};

// Index of the largest logit; the lowest index wins ties.
int32_t Argmax(std::span<const float> logits);

}  // namespace headwise::model
