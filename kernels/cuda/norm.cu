// One CTA per row: a double sum of squares reduced through shared memory, then
// every thread scales its strided slice. The scale is 1.0f / sqrtf(mean + eps)
// and y = (x * scale) * weight with separate roundings, exactly as kernels/cpu.
#include "kernels/cuda/norm.cuh"

namespace headwise::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RmsNormKernel(float* out, const float* x, const float* weight, int64_t n,
                              float eps) {
  __shared__ double partial[kThreads / 32];
  __shared__ float scale_sh;
  const float* xr = x + blockIdx.x * n;
  float* yr = out + blockIdx.x * n;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const double v = xr[i];
    sum += v * v;
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    const float mean = static_cast<float>(total / static_cast<double>(n));
    scale_sh = 1.0f / sqrtf(mean + eps);
  }
  __syncthreads();
  const float scale = scale_sh;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), weight[i]);
  }
}

}  // namespace

cudaError_t RmsNorm(float* out, const float* x, const float* weight, int64_t rows, int64_t n,
                    float eps, cudaStream_t stream) {
  if (rows < 0 || n < 1 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(out, x, weight, n, eps);
  return cudaGetLastError();
}

}  // namespace headwise::kernels::cuda
