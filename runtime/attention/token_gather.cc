#include "runtime/attention/token_gather.h"

#include <cstring>

namespace headwise::attention {

kernels::KvBlockView TokenGather::Add(const kernels::KvBlockView& view,
                                      std::span<const uint16_t> tokens, int64_t row_bytes) {
  if (tokens.empty()) return view;
  const size_t n = tokens.size(), row = size_t(row_bytes);
  std::vector<uint8_t>& buffer = buffers_.emplace_back(2 * n * row);
  const auto* k = static_cast<const uint8_t*>(view.k);
  const auto* v = static_cast<const uint8_t*>(view.v);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(buffer.data() + i * row, k + tokens[i] * row, row);
    std::memcpy(buffer.data() + (n + i) * row, v + tokens[i] * row, row);
  }
  return {buffer.data(), buffer.data() + n * row, static_cast<int32_t>(n), view.first_pos};
}

}  // namespace headwise::attention
