// The CUDA Rope equals the CPU one on fresh random rows and positions, in norm
// and neox modes, with partial rotation, freq_scale, freq_factors and strided
// rows; parameters the CPU rejects are rejected.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/rope.cuh"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using testing::DeviceBuffer;

TEST(CudaRopeTest, MatchesCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 20);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int cases = testing::TestCases(24);
  for (int c = 0; c < cases; ++c) {
    const int32_t head_dim = (rng() % 2) ? 128 : 64;
    const int32_t n_heads = 1 + int32_t(rng() % 9);
    const int64_t rows = 1 + int64_t(rng() % 50);
    kernels::RopeParams params;
    params.mode = rng() % 2 ? kernels::RopeMode::kNorm : kernels::RopeMode::kNeox;
    params.n_rot = rng() % 3 == 0 ? head_dim / 2 : head_dim;
    params.freq_base = rng() % 2 ? 10000.0f : 500000.0f;
    params.freq_scale = rng() % 3 == 0 ? 0.25f : 1.0f;
    std::vector<float> factors(params.n_rot / 2);
    for (float& f : factors) f = 1.0f + float(rng() % 8);
    const bool use_factors = rng() % 2;
    const int64_t stride = n_heads * head_dim + (rng() % 2 ? 5 : 0);
    std::vector<float> x(rows * stride);
    for (float& v : x) v = normal(rng);
    std::vector<int32_t> pos(rows);
    for (auto& p : pos) p = int32_t(rng() % (rng() % 2 ? 100 : 1000000));
    SCOPED_TRACE("case " + std::to_string(c) + " head_dim " + std::to_string(head_dim) + " n_rot " +
                 std::to_string(params.n_rot) + " neox " +
                 std::to_string(params.mode == kernels::RopeMode::kNeox));

    DeviceBuffer<float> d_x(x), d_f(factors);
    DeviceBuffer<int32_t> d_pos(pos);
    kernels::RopeParams cpu_params = params, gpu_params = params;
    cpu_params.freq_factors = use_factors ? factors.data() : nullptr;
    gpu_params.freq_factors = use_factors ? d_f.get() : nullptr;
    std::vector<float> ref = x;
    ASSERT_TRUE(kernels::Rope(ref.data(), pos.data(), rows, n_heads, head_dim, cpu_params, stride));
    HEADWISE_CUDA_ASSERT(kernels::cuda::Rope(d_x.get(), d_pos.get(), rows, n_heads, head_dim,
                                             gpu_params, stride, nullptr));
    HEADWISE_CUDA_ASSERT(cudaDeviceSynchronize());
    const std::vector<float> got = d_x.Download();
    for (size_t i = 0; i < got.size(); ++i) {
      // cos/sin agree to a float ulp (CUDA's double pow/sincos are within 2 ulp
      // of glibc's); products round the same way.
      ASSERT_NEAR(got[i], ref[i], 1e-6f * (1.0f + std::fabs(ref[i]))) << "element " << i;
    }
  }
  kernels::RopeParams bad;
  bad.n_rot = 3;
  EXPECT_EQ(kernels::cuda::Rope(nullptr, nullptr, 1, 1, 64, bad, 0, nullptr),
            cudaErrorInvalidValue);
  bad.n_rot = 64;
  bad.freq_base = 0.0f;
  EXPECT_EQ(kernels::cuda::Rope(nullptr, nullptr, 1, 1, 64, bad, 0, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace headwise
