// The CUDA LSE merge equals the CPU one on fresh random partials, including
// empty (-inf) partials; outputs are poisoned before each launch.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cuda/lse.cuh"
#include "kernels/lse.h"
#include "tests/cuda/cuda_test_util.h"

namespace headwise {
namespace {

TEST(CudaLseMergeTest, MatchesCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::random_device device;
  const unsigned seed = device();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::normal_distribution<float> normal(0.0f, 3.0f);

  const int64_t rows = 517, dim = 128;
  std::vector<float> o_a(rows * dim), o_b(rows * dim), lse_a(rows), lse_b(rows);
  for (float& x : o_a) x = normal(rng);
  for (float& x : o_b) x = normal(rng);
  for (int64_t r = 0; r < rows; ++r) {
    lse_a[r] = r % 7 == 0 ? -std::numeric_limits<float>::infinity() : normal(rng);
    lse_b[r] = r % 11 == 0 ? -std::numeric_limits<float>::infinity() : normal(rng);
  }

  float *d_oa, *d_ob, *d_la, *d_lb;
  HEADWISE_CUDA_ASSERT(cudaMalloc(&d_oa, o_a.size() * sizeof(float)));
  HEADWISE_CUDA_ASSERT(cudaMalloc(&d_ob, o_b.size() * sizeof(float)));
  HEADWISE_CUDA_ASSERT(cudaMalloc(&d_la, rows * sizeof(float)));
  HEADWISE_CUDA_ASSERT(cudaMalloc(&d_lb, rows * sizeof(float)));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(d_oa, o_a.data(), o_a.size() * 4, cudaMemcpyHostToDevice));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(d_ob, o_b.data(), o_b.size() * 4, cudaMemcpyHostToDevice));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(d_la, lse_a.data(), rows * 4, cudaMemcpyHostToDevice));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(d_lb, lse_b.data(), rows * 4, cudaMemcpyHostToDevice));

  HEADWISE_CUDA_ASSERT(kernels::cuda::LseMerge(d_oa, d_la, d_ob, d_lb, rows, dim, nullptr));
  std::vector<float> gpu_o(rows * dim, std::nanf("")), gpu_lse(rows, std::nanf(""));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(gpu_o.data(), d_oa, gpu_o.size() * 4, cudaMemcpyDeviceToHost));
  HEADWISE_CUDA_ASSERT(cudaMemcpy(gpu_lse.data(), d_la, rows * 4, cudaMemcpyDeviceToHost));

  kernels::LseMerge(o_a.data(), lse_a.data(), o_b.data(), lse_b.data(), rows, dim);
  for (int64_t r = 0; r < rows; ++r) {
    if (std::isinf(lse_a[r])) {
      EXPECT_TRUE(std::isinf(gpu_lse[r]) && gpu_lse[r] < 0) << "row " << r;
    } else {
      EXPECT_NEAR(gpu_lse[r], lse_a[r], 1e-5f * (1 + std::fabs(lse_a[r]))) << "row " << r;
    }
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_NEAR(gpu_o[r * dim + i], o_a[r * dim + i], 1e-5f * (1 + std::fabs(o_a[r * dim + i])))
          << "row " << r << " col " << i;
    }
  }
  cudaFree(d_oa);
  cudaFree(d_ob);
  cudaFree(d_la);
  cudaFree(d_lb);
}

}  // namespace
}  // namespace headwise
