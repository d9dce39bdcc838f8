// RoPE on the GPU with the CPU kernel's contract (kernels/ops.h Rope): norm and
// neox pair layouts, linear frequency scaling, per-pair freq_factors, angles and
// their sin/cos in double, so results agree with the CPU to a float ulp or two.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/ops.h"

namespace headwise::kernels::cuda {

// Rotates x [rows x n_heads x head_dim] (device, row_stride floats between
// rows, 0 = dense) in place, row r at position pos[r] (device array of rows).
// params.freq_factors, when set, is a device array of n_rot/2 floats. Returns
// cudaErrorInvalidValue, enqueuing nothing, where the CPU Rope returns false
// (n_rot odd or outside (0, head_dim], freq_base or freq_scale not positive) or
// rows > 2^31 - 1; else the launch status.
cudaError_t Rope(float* x, const int32_t* pos, int64_t rows, int32_t n_heads, int32_t head_dim,
                 const RopeParams& params, int64_t row_stride, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
