// The all-resident KV cache of one sequence, laid out as DESIGN.md's blocks:
// per (layer, kv head), blocks of `block_tokens` tokens of K and V in the KV
// dtype. It is the single-process reference layout; the tiered block store of
// the offload milestone keeps the same block geometry so views are
// interchangeable. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace headwise::kv {

struct KvGeometry {
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_tokens = 256;
  kernels::KvDtype dtype = kernels::KvDtype::kF32;

  // Bytes of K plus V of one block of one (layer, kv head).
  int64_t BlockBytes() const;
};

class KvCache {
 public:
  explicit KvCache(const KvGeometry& geometry);

  const KvGeometry& geometry() const { return geometry_; }
  // Tokens stored in `layer` (layers fill one after another during a forward).
  int64_t n_tokens(int32_t layer) const { return n_tokens_[layer]; }
  // Tokens stored in every layer: the sequence length the cache holds.
  int64_t length() const;
  // Bytes allocated for blocks (full blocks' worth, including the partly
  // filled tail of each (layer, kv head)).
  int64_t allocated_bytes() const;

  // Appends `rows` tokens to `layer`: k and v are [rows x n_kv_heads x head_dim]
  // f32 with `row_stride` floats between rows, converted to the KV dtype.
  void Append(int32_t layer, const float* k, const float* v, int64_t rows, int64_t row_stride);

  // Fills `views` with the blocks of every kv head of `layer`, head-major
  // (n_kv_heads * n_blocks entries), and returns n_blocks. Views stay valid
  // until the next Append or Truncate.
  int32_t Views(int32_t layer, std::vector<kernels::KvBlockView>& views) const;

  // Drops every token at position >= n_tokens in every layer.
  void Truncate(int64_t n_tokens);

 private:
  struct Block {
    std::vector<uint8_t> k;
    std::vector<uint8_t> v;
    int32_t n_tokens = 0;
  };
  // blocks_[layer][kv_head][block]
  std::vector<std::vector<std::vector<std::unique_ptr<Block>>>> blocks_;
  std::vector<int64_t> n_tokens_;
  KvGeometry geometry_;
};

}  // namespace headwise::kv
