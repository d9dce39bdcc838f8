// One CTA per row: the row's cos/sin table (one entry per rotated pair) is
// computed once in double into shared memory, then every (head, pair) rotates.
// Products and the difference round separately (no FMA contraction), as the
// CPU loop does.
#include "kernels/cuda/rope.cuh"

namespace headwise::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPairs = 4096;  // 32 KiB of cos/sin

__global__ void RopeKernel(float* x, const int32_t* pos, int32_t n_heads, int32_t head_dim,
                           RopeParams params, int64_t row_stride) {
  extern __shared__ float table[];  // cos[n_pairs], sin[n_pairs]
  const int32_t n_pairs = params.n_rot / 2;
  const double p = pos[blockIdx.x];
  for (int32_t i = threadIdx.x; i < n_pairs; i += kThreads) {
    const double ff = params.freq_factors != nullptr ? params.freq_factors[i] : 1.0;
    const double inv_freq = static_cast<double>(params.freq_scale) *
                            pow(static_cast<double>(params.freq_base), -2.0 * i / params.n_rot) /
                            ff;
    double s, c;
    sincos(p * inv_freq, &s, &c);
    table[i] = static_cast<float>(c);
    table[n_pairs + i] = static_cast<float>(s);
  }
  __syncthreads();
  const int32_t stride0 = params.mode == RopeMode::kNorm ? 2 : 1;
  const int32_t offset1 = params.mode == RopeMode::kNorm ? 1 : n_pairs;
  float* row = x + blockIdx.x * row_stride;
  const int64_t work = static_cast<int64_t>(n_heads) * n_pairs;
  for (int64_t w = threadIdx.x; w < work; w += kThreads) {
    const int64_t h = w / n_pairs;
    const int32_t i = static_cast<int32_t>(w % n_pairs);
    float* a = row + h * head_dim + i * stride0;
    const float x0 = a[0], x1 = a[offset1];
    const float c = table[i], s = table[n_pairs + i];
    a[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    a[offset1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

}  // namespace

cudaError_t Rope(float* x, const int32_t* pos, int64_t rows, int32_t n_heads, int32_t head_dim,
                 const RopeParams& params, int64_t row_stride, cudaStream_t stream) {
  if (params.n_rot <= 0 || params.n_rot % 2 != 0 || params.n_rot > head_dim) {
    return cudaErrorInvalidValue;
  }
  if (!(params.freq_base > 0.0f) || !(params.freq_scale > 0.0f)) return cudaErrorInvalidValue;
  if (params.n_rot / 2 > kMaxPairs || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (rows <= 0 || n_heads <= 0) return cudaSuccess;
  if (row_stride == 0) row_stride = static_cast<int64_t>(n_heads) * head_dim;
  const size_t smem = sizeof(float) * static_cast<size_t>(params.n_rot);
  RopeKernel<<<static_cast<unsigned>(rows), kThreads, smem, stream>>>(x, pos, n_heads, head_dim,
                                                                      params, row_stride);
  return cudaGetLastError();
}

}  // namespace headwise::kernels::cuda
