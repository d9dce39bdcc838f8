// Block key summaries for sparse attention (HGCA / Quest-style block
// selection): the per-channel min and max of a block's keys bound every
// score in the block from above, so a query can rank blocks without reading
// them: for every key k of the block,
//   q . k <= sum_i max(q_i * min_i, q_i * max_i).
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace headwise::kernels {

// min/max[head_dim] over the `n_tokens` keys (rows of head_dim values in
// `dtype`, contiguous) of one block; n_tokens >= 1.
void KeyBounds(KvDtype dtype, const void* keys, int32_t n_tokens, int32_t head_dim, float* min,
               float* max);

// The upper bound above for query q (head_dim floats, unscaled).
float KeyBoundScore(const float* q, const float* min, const float* max, int32_t head_dim);

}  // namespace headwise::kernels
