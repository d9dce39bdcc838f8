// One block per row: thread 0's view of the two lse values decides the weights,
// every thread rescales a strided slice of the row. Matches kernels/cpu/lse.cc
// including the -inf cases (an empty partial leaves the other side unchanged).
#include <math_constants.h>

#include "kernels/cuda/lse.cuh"

namespace headwise::kernels::cuda {
namespace {

__global__ void LseMergeKernel(float* o_acc, float* lse_acc, const float* o_in, const float* lse_in,
                               int64_t dim) {
  const int64_t row = blockIdx.x;
  const float a = lse_acc[row];
  const float b = lse_in[row];
  const float m = fmaxf(a, b);
  float w_a = 0.0f;
  float w_b = 0.0f;
  float lse = -CUDART_INF_F;
  if (m != -CUDART_INF_F) {
    const float e_a = a == -CUDART_INF_F ? 0.0f : expf(a - m);
    const float e_b = b == -CUDART_INF_F ? 0.0f : expf(b - m);
    const float sum = e_a + e_b;
    w_a = e_a / sum;
    w_b = e_b / sum;
    lse = m + logf(sum);
  }
  float* out = o_acc + row * dim;
  const float* in = o_in + row * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[i] = m == -CUDART_INF_F ? 0.0f : w_a * out[i] + w_b * in[i];
  }
  __syncthreads();
  if (threadIdx.x == 0) lse_acc[row] = lse;
}

}  // namespace

cudaError_t LseMerge(float* o_acc, float* lse_acc, const float* o_in, const float* lse_in,
                     int64_t rows, int64_t dim, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || dim <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  const int threads = dim >= 128 ? 128 : 32;
  LseMergeKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(o_acc, lse_acc, o_in, lse_in,
                                                                      dim);
  return cudaGetLastError();
}

}  // namespace headwise::kernels::cuda
