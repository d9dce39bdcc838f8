// Selected tokens of KV blocks copied densely, so the partial-attention
// kernel (which reads whole blocks) attends exactly those tokens: the
// quantkv policy's token-level selection, applied next to the memory that
// holds the blocks (this rank, a memory rank's pool, a disk read).
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "kernels/attention.h"

namespace headwise::attention {

// Dense copies of some tokens of blocks, alive until Clear. The buffers are
// kept across Clear and reused (a decode step gathers every layer).
class TokenGather {
 public:
  // A view of `tokens` (offsets, increasing) of `view`: their K rows then V
  // rows, `row_bytes` each, copied together. An empty `tokens` returns
  // `view` itself.
  kernels::KvBlockView Add(const kernels::KvBlockView& view, std::span<const uint16_t> tokens,
                           int64_t row_bytes);
  void Clear() { used_ = 0; }

 private:
  std::deque<std::vector<uint8_t>> buffers_;  // a deque: earlier ones stay put
  size_t used_ = 0;
};

// The offsets (increasing) of the `k` tokens of `view` whose keys score
// highest for any of `group` queries (group x head_dim floats, contiguous;
// scores q . k): HGCA's token-level top-k, computed where the block's keys
// are. All tokens when k >= the block's.
std::vector<uint16_t> TopTokens(const kernels::KvBlockView& view, kernels::KvDtype dtype,
                                int32_t head_dim, const float* q, int32_t group, int32_t k);

}  // namespace headwise::attention
