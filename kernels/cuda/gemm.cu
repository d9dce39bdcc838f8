// Row-major C [m x n] is column-major C^T [n x m] = B [n x k] * A^T [k x m]:
// cuBLAS reads row-major B as a column-major k x n matrix (so op T) and
// row-major A as a column-major k x m matrix (op N). One cublasGemmEx.
#include "kernels/cuda/gemm.cuh"

#include <climits>

namespace headwise::kernels::cuda {

cublasStatus_t GemmBf16(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                        int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                        float alpha, float beta) {
  if (lda == 0) lda = k;
  if (ldb == 0) ldb = k;
  if (ldc == 0) ldc = n;
  if (m < 0 || n < 0 || k < 0 || lda < k || ldb < k || ldc < n) return CUBLAS_STATUS_INVALID_VALUE;
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
      ldc > INT_MAX) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (k == 0 && beta == 1.0f) return CUBLAS_STATUS_SUCCESS;
  return cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                      static_cast<int>(k), &alpha, b, CUDA_R_16BF, static_cast<int>(ldb), a,
                      CUDA_R_16BF, static_cast<int>(lda), &beta, c, CUDA_R_32F,
                      static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

}  // namespace headwise::kernels::cuda
