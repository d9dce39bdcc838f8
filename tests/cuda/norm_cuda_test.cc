// The CUDA RmsNorm equals the CPU one (to a float ulp) on fresh random rows,
// out of place and in place; outputs are NaN-poisoned before each call.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/norm.cuh"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using testing::DeviceBuffer;

TEST(CudaRmsNormTest, MatchesCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 10);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (const int64_t n : {1, 3, 576, 4096, 5000}) {
    const int64_t rows = 1 + int64_t(rng() % 37);
    std::vector<float> x(rows * n), w(n), ref(rows * n);
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    kernels::RmsNorm(ref.data(), x.data(), w.data(), rows, n, 1e-5f);
    DeviceBuffer<float> d_x(x), d_w(w), d_out(rows * n);
    for (bool in_place : {false, true}) {
      SCOPED_TRACE("n " + std::to_string(n) + (in_place ? " in place" : ""));
      if (in_place) {
        HEADWISE_CUDA_ASSERT(d_x.Upload(x));
      } else {
        HEADWISE_CUDA_ASSERT(d_out.Poison());
      }
      float* out = in_place ? d_x.get() : d_out.get();
      HEADWISE_CUDA_ASSERT(
          kernels::cuda::RmsNorm(out, d_x.get(), d_w.get(), rows, n, 1e-5f, nullptr));
      HEADWISE_CUDA_ASSERT(cudaDeviceSynchronize());
      const std::vector<float> got = in_place ? d_x.Download() : d_out.Download();
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], ref[i], 2e-7f * std::fabs(ref[i]) + 1e-30f) << "element " << i;
      }
    }
  }
  EXPECT_EQ(kernels::cuda::RmsNorm(nullptr, nullptr, nullptr, 1, 0, 1e-5f, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace headwise
