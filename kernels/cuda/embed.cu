// One CTA per token: a coalesced copy of its table row.
#include <math_constants.h>

#include "kernels/cuda/embed.cuh"

namespace headwise::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void EmbedKernel(float* out, const float* table, int64_t n_vocab, int64_t dim,
                            const int32_t* ids) {
  const int32_t id = ids[blockIdx.x];
  float* dst = out + blockIdx.x * dim;
  if (id < 0 || id >= n_vocab) {
    for (int64_t d = threadIdx.x; d < dim; d += kThreads) dst[d] = CUDART_NAN_F;
    return;
  }
  const float* src = table + id * dim;
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) dst[d] = src[d];
}

}  // namespace

cudaError_t Embed(float* out, const float* table, int64_t n_vocab, int64_t dim, const int32_t* ids,
                  int64_t n_ids, cudaStream_t stream) {
  if (n_vocab < 0 || dim < 0 || n_ids < 0 || n_ids > 0x7fffffff) return cudaErrorInvalidValue;
  if (n_ids == 0 || dim == 0) return cudaSuccess;
  EmbedKernel<<<static_cast<unsigned>(n_ids), kThreads, 0, stream>>>(out, table, n_vocab, dim, ids);
  return cudaGetLastError();
}

}  // namespace headwise::kernels::cuda
