// The cuBLAS bf16 GEMM helper computes x * W^T (row-major, GGUF weight layout)
// with f32 accumulation: compared with a double reference on the same bf16
// inputs, for odd shapes, leading dimensions and alpha/beta.
#include <cublas_v2.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/gemm.cuh"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using testing::DeviceBuffer;

TEST(CudaGemmTest, MatchesReference) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 50);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  struct Dims {
    int64_t m, n, k, pad;
    float alpha, beta;
  };
  for (const Dims dims : {Dims{1, 576, 576, 0, 1, 0}, Dims{7, 1536, 576, 3, 1, 0},
                          Dims{33, 100, 256, 8, 0.5f, 1.0f}, Dims{128, 64, 1000, 0, 1, 0.25f}}) {
    const auto [m, n, k, pad, alpha, beta] = dims;
    SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k));
    const int64_t lda = k + pad, ldb = k + 2 * pad, ldc = n + pad;
    std::vector<uint16_t> a(m * lda), b(n * ldb);
    std::vector<float> c(m * ldc);
    for (auto& x : a) x = kernels::F32ToBf16(uni(rng));
    for (auto& x : b) x = kernels::F32ToBf16(uni(rng));
    for (auto& x : c) x = uni(rng);
    DeviceBuffer<uint16_t> d_a(a), d_b(b);
    DeviceBuffer<float> d_c(c);
    if (beta == 0.0f) {
      HEADWISE_CUDA_ASSERT(d_c.Poison());  // beta 0 must not read c
    }
    ASSERT_EQ(kernels::cuda::GemmBf16(handle, m, n, k, d_a.get(), pad ? lda : 0, d_b.get(),
                                      pad ? ldb : 0, d_c.get(), pad ? ldc : 0, alpha, beta),
              CUBLAS_STATUS_SUCCESS);
    HEADWISE_CUDA_ASSERT(cudaDeviceSynchronize());
    const std::vector<float> got = d_c.Download();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double ref = 0, mag = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double t =
              double(kernels::Bf16ToF32(a[i * lda + p])) * kernels::Bf16ToF32(b[j * ldb + p]);
          ref += t;
          mag += std::fabs(t);
        }
        ref = alpha * ref + beta * c[i * ldc + j];
        ASSERT_NEAR(got[i * ldc + j], ref, 2e-5 * (mag + 1)) << "c[" << i << "][" << j << "]";
      }
    }
  }
  EXPECT_EQ(kernels::cuda::GemmBf16(handle, -1, 1, 1, nullptr, 0, nullptr, 0, nullptr, 0),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasDestroy(handle);
}

}  // namespace
}  // namespace headwise
