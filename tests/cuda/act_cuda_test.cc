// The CUDA element-wise ops equal the CPU ones on fresh random data: SwiGlu
// (to an ulp or two: expf differs from glibc's), Add and F32ToBf16 (exactly,
// including NaN, inf and rounding ties). Outputs are NaN-poisoned first.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cuda/act.cuh"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using testing::DeviceBuffer;

TEST(CudaActTest, SwiGluAndAddMatchCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 30);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const int64_t n = 100003;
  std::vector<float> a(n), b(n), ref(n);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);
  DeviceBuffer<float> d_a(a), d_b(b), d_out(n);

  kernels::SwiGlu(ref.data(), a.data(), b.data(), n);
  HEADWISE_CUDA_ASSERT(d_out.Poison());
  HEADWISE_CUDA_ASSERT(kernels::cuda::SwiGlu(d_out.get(), d_a.get(), d_b.get(), n, nullptr));
  std::vector<float> got = d_out.Download();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(got[i], ref[i], 1e-6f * std::fabs(ref[i]) + 1e-30f) << "swiglu " << i;
  }

  kernels::Add(ref.data(), a.data(), b.data(), n);
  HEADWISE_CUDA_ASSERT(d_out.Poison());
  HEADWISE_CUDA_ASSERT(kernels::cuda::Add(d_out.get(), d_a.get(), d_b.get(), n, nullptr));
  got = d_out.Download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], ref[i]) << "add " << i;
}

TEST(CudaActTest, F32ToBf16IsExact) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 31);
  std::vector<float> x(65536 + 4);
  for (size_t i = 0; i < x.size(); ++i) {
    // Random bit patterns; every other one an exact rounding tie.
    uint32_t bits = uint32_t(rng());
    if (i % 2) bits = (bits & 0xffff0000u) | 0x8000u;
    std::memcpy(&x[i], &bits, 4);
  }
  x[x.size() - 4] = std::numeric_limits<float>::infinity();
  x[x.size() - 3] = std::numeric_limits<float>::quiet_NaN();
  x[x.size() - 2] = -0.0f;
  x[x.size() - 1] = 3.4e38f;
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<uint16_t> d_y(x.size());
  HEADWISE_CUDA_ASSERT(d_y.Poison());
  HEADWISE_CUDA_ASSERT(kernels::cuda::F32ToBf16(d_y.get(), d_x.get(), int64_t(x.size()), nullptr));
  const std::vector<uint16_t> got = d_y.Download();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], kernels::F32ToBf16(x[i])) << i;
}

}  // namespace
}  // namespace headwise
