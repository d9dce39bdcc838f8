// RMSNorm on the GPU with the CPU kernel's contract (kernels/ops.h RmsNorm):
// the mean of squares is accumulated in double, the scaling rounds as the CPU
// does, so results agree to within a float ulp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace headwise::kernels::cuda {

// out = x / sqrt(mean(x^2) + eps) * weight for each of `rows` rows of n floats
// (device pointers, row-major; out may equal x). Enqueued on `stream`; returns
// cudaErrorInvalidValue for rows < 0, n < 1 or rows > 2^31 - 1, else the
// launch status.
cudaError_t RmsNorm(float* out, const float* x, const float* weight, int64_t rows, int64_t n,
                    float eps, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
