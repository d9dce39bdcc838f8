// HCAttention's key cache on the coordinator: every token's keys quantized
// group-wise (kernels/key_quant.h), per (layer, kv head), so a decode step
// can score the whole sequence while the exact K/V stay offloaded; and the
// eviction state of the quantkv policy: an accumulated attention score and
// an evicted flag per token. Eviction is per request: Truncate (the end of a
// session's question) clears it, so every request sees the whole context,
// and resets the accumulated scores to what prefill observed (kept while
// every observing row is below the cut, else dropped).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/key_quant.h"

namespace headwise::kv {

class KeyCache {
 public:
  // `bits` 4 or 2; groups of 32 channels (head_dim when it is not a multiple).
  KeyCache(int32_t n_layers, int32_t n_kv_heads, int32_t head_dim, int32_t bits);

  const kernels::KeyQuantFormat& format() const { return format_; }
  int64_t n_tokens(int32_t layer) const { return n_tokens_[layer]; }

  // Appends `rows` tokens' keys of `layer`: [rows x n_kv_heads x head_dim]
  // f32 with `row_stride` floats between rows.
  void Append(int32_t layer, const float* k, int64_t rows, int64_t row_stride);
  // Drops tokens at positions >= n_tokens and clears every eviction.
  void Truncate(int64_t n_tokens);

  // scores[j * stride + t] = q_j . k'_t for the `n_q` queries (n_q x
  // head_dim, contiguous) and tokens [begin, end) of (layer, head).
  void Scores(int32_t layer, int32_t head, const float* q, int32_t n_q, int64_t begin, int64_t end,
              float* scores, int64_t stride) const;

  // Adds `mass` (one float per token of (layer, head)) to the observed and
  // accumulated scores; the observing rows end at position `rows_end`.
  void Observe(int32_t layer, int32_t head, const float* mass, int64_t rows_end);
  // Per token of (layer, head): attention mass accumulated over prefill
  // observations and decode steps, and whether the token was evicted.
  std::vector<float>& accumulated(int32_t layer, int32_t head) {
    return heads_[Index(layer, head)].acc;
  }
  std::vector<uint8_t>& evicted(int32_t layer, int32_t head) {
    return heads_[Index(layer, head)].evicted;
  }
  // Tokens evicted over every (layer, head), and those kept.
  int64_t n_evicted() const;
  // Bytes of codes and scales held (the device-side cost of the policy).
  int64_t bytes() const;

 private:
  struct Head {
    std::vector<uint8_t> codes;     // tokens x CodeBytes
    std::vector<float> scale_zero;  // tokens x Groups x 2
    std::vector<float> observed;    // tokens: prefill observations only
    std::vector<float> acc;         // tokens: observations and decode steps
    std::vector<uint8_t> evicted;   // tokens
  };
  size_t Index(int32_t layer, int32_t head) const { return size_t(layer) * n_kv_heads_ + head; }

  int32_t n_kv_heads_;
  kernels::KeyQuantFormat format_;
  std::vector<int64_t> n_tokens_;
  int64_t observed_end_ = 0;  // past the last observing row
  std::vector<Head> heads_;
};

}  // namespace headwise::kv
