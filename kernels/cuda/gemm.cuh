// bf16 GEMM through cuBLAS with fp32 accumulation, in the row-major terms of
// the forward pass: activations x [m x k] times weights W [n x k] (GGUF's
// [out x in] layout, as DequantizeRowsToBf16 writes it) transposed.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

namespace headwise::kernels::cuda {

// c[i * ldc + j] = alpha * sum_p a[i * lda + p] * b[j * ldb + p] + beta * c[i * ldc + j]
// for i < m, j < n: a and b bf16 (bits), c f32, all device pointers; ld* of 0
// means dense (k, k, n). cublasGemmEx with CUBLAS_COMPUTE_32F. Runs on the
// stream `handle` is bound to (cublasSetStream); the handle must be in host
// pointer mode (the default). beta == 0 never reads c. m, n or k of 0 does
// nothing; sizes above INT32_MAX or negative are CUBLAS_STATUS_INVALID_VALUE.
cublasStatus_t GemmBf16(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                        int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                        float alpha = 1.0f, float beta = 0.0f);

}  // namespace headwise::kernels::cuda
