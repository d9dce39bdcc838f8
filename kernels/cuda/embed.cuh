// Token embedding lookup on the GPU: rows of an f32 table gathered by token id.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace headwise::kernels::cuda {

// out[r * dim + d] = table[ids[r] * dim + d] for r < n_ids (all device
// pointers; table is n_vocab x dim). An id outside [0, n_vocab) yields a row
// of NaN rather than a fault (callers validate ids on the host; NaN makes a
// slip visible). Enqueued on `stream`; cudaErrorInvalidValue for negative
// sizes or n_ids > 2^31 - 1, else the launch status.
cudaError_t Embed(float* out, const float* table, int64_t n_vocab, int64_t dim, const int32_t* ids,
                  int64_t n_ids, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
