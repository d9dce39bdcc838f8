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

// Dense copies of some tokens of blocks, alive until Clear.
class TokenGather {
 public:
  // A view of `tokens` (offsets, increasing) of `view`: their K rows then V
  // rows, `row_bytes` each, copied together. An empty `tokens` returns
  // `view` itself.
  kernels::KvBlockView Add(const kernels::KvBlockView& view, std::span<const uint16_t> tokens,
                           int64_t row_bytes);
  void Clear() { buffers_.clear(); }

 private:
  std::deque<std::vector<uint8_t>> buffers_;
};

}  // namespace headwise::attention
