#include "runtime/attention/token_gather.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

namespace headwise::attention {

kernels::KvBlockView TokenGather::Add(const kernels::KvBlockView& view,
                                      std::span<const uint16_t> tokens, int64_t row_bytes) {
  if (tokens.empty()) return view;
  const size_t n = tokens.size(), row = size_t(row_bytes);
  if (used_ == buffers_.size()) buffers_.emplace_back();
  std::vector<uint8_t>& buffer = buffers_[used_++];
  buffer.resize(2 * n * row);
  const auto* k = static_cast<const uint8_t*>(view.k);
  const auto* v = static_cast<const uint8_t*>(view.v);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(buffer.data() + i * row, k + tokens[i] * row, row);
    std::memcpy(buffer.data() + (n + i) * row, v + tokens[i] * row, row);
  }
  return {buffer.data(), buffer.data() + n * row, static_cast<int32_t>(n), view.first_pos};
}

std::vector<uint16_t> TopTokens(const kernels::KvBlockView& view, kernels::KvDtype dtype,
                                int32_t head_dim, const float* q, int32_t group, int32_t k) {
  std::vector<uint16_t> out;
  if (k >= view.n_tokens) return out;  // empty: the whole block
  std::vector<float> key(static_cast<size_t>(head_dim));
  std::vector<float> score(static_cast<size_t>(view.n_tokens));
  const size_t row = size_t(head_dim) * kernels::KvDtypeSize(dtype);
  for (int32_t t = 0; t < view.n_tokens; ++t) {
    const void* src = static_cast<const uint8_t*>(view.k) + t * row;
    for (int32_t d = 0; d < head_dim; ++d) {
      switch (dtype) {
        case kernels::KvDtype::kF32:
          key[d] = static_cast<const float*>(src)[d];
          break;
        case kernels::KvDtype::kF16:
          key[d] = kernels::F16ToF32(static_cast<const uint16_t*>(src)[d]);
          break;
        case kernels::KvDtype::kBF16:
          key[d] = kernels::Bf16ToF32(static_cast<const uint16_t*>(src)[d]);
          break;
      }
    }
    float best = -std::numeric_limits<float>::infinity();
    for (int32_t j = 0; j < group; ++j) {
      float dot = 0;
      for (int32_t d = 0; d < head_dim; ++d) dot += q[j * head_dim + d] * key[d];
      best = std::max(best, dot);
    }
    score[t] = best;
  }
  out.resize(size_t(view.n_tokens));
  std::iota(out.begin(), out.end(), uint16_t{0});
  std::stable_sort(out.begin(), out.end(),
                   [&](uint16_t x, uint16_t y) { return score[x] > score[y]; });
  out.resize(size_t(std::max(k, 1)));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace headwise::attention
