// Element-wise ops of the forward pass on the GPU: SwiGLU and the residual add
// with the CPU kernels' contracts (kernels/ops.h), and f32 -> bf16 rounding
// (the CPU F32ToBf16, bit for bit) for activations entering bf16 GEMMs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace headwise::kernels::cuda {

// All: device pointers, n elements, enqueued on `stream`; n == 0 does nothing,
// n < 0 is cudaErrorInvalidValue; else the launch status. out may equal an
// input but must not otherwise overlap one.

// out = silu(gate) * up with silu(g) = g / (1 + expf(-g)).
cudaError_t SwiGlu(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream);

// out = a + b.
cudaError_t Add(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);

// dst = bf16 bits of src, round to nearest even, NaN kept (quiet).
cudaError_t F32ToBf16(uint16_t* dst, const float* src, int64_t n, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
