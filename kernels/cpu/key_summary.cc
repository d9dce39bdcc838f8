#include "kernels/key_summary.h"

#include <algorithm>
#include <vector>

namespace headwise::kernels {

void KeyBounds(KvDtype dtype, const void* keys, int32_t n_tokens, int32_t head_dim, float* min,
               float* max) {
  std::vector<float> row(static_cast<size_t>(head_dim));
  const size_t row_bytes = size_t(head_dim) * KvDtypeSize(dtype);
  for (int32_t t = 0; t < n_tokens; ++t) {
    FromKvDtype(dtype, static_cast<const uint8_t*>(keys) + t * row_bytes, row.data(), head_dim);
    for (int32_t i = 0; i < head_dim; ++i) {
      min[i] = t == 0 ? row[i] : std::min(min[i], row[i]);
      max[i] = t == 0 ? row[i] : std::max(max[i], row[i]);
    }
  }
}

float KeyBoundScore(const float* q, const float* min, const float* max, int32_t head_dim) {
  float bound = 0;
  for (int32_t i = 0; i < head_dim; ++i) bound += std::max(q[i] * min[i], q[i] * max[i]);
  return bound;
}

}  // namespace headwise::kernels
