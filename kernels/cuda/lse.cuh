// LSE merge of partial attentions on the GPU: the same contract as the CPU
// kernels::LseMerge (kernels/lse.h), for (o, lse) rows already in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace headwise::kernels::cuda {

// Merges (o_in, lse_in) into (o_acc, lse_acc) in place on `stream`. Device
// pointers; o_* are rows x dim row-major. Returns the launch status (errors of
// the kernel itself surface at the next synchronisation).
cudaError_t LseMerge(float* o_acc, float* lse_acc, const float* o_in, const float* lse_in,
                     int64_t rows, int64_t dim, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
