// The CUDA dequantizer to bf16 is bit-identical to F32ToBf16 of the CPU
// DequantizeRow for every supported GGUF type, on fresh random blocks (scale
// halves kept finite) in row batches; unsupported types and bad row lengths
// are rejected.
#include <random>
#include <vector>

#include "kernels/cuda/dequant.cuh"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using kernels::GgmlType;
using testing::DeviceBuffer;

// Byte offsets of the f16 scale fields inside one block of `type`.
std::vector<int> HalfFields(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return {0};
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      return {0, 2};
    case GgmlType::kQ6_K:
      return {208};
    default:
      return {};
  }
}

TEST(CudaDequantTest, BitIdenticalToCpu) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 60);
  std::uniform_real_distribution<float> scale(-0.5f, 0.5f);
  const GgmlType types[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ4_0,
                            GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                            GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};
  for (const GgmlType type : types) {
    const auto traits = kernels::TypeTraits(uint32_t(type));
    ASSERT_TRUE(traits.has_value());
    SCOPED_TRACE(std::string(traits->name));
    ASSERT_TRUE(kernels::cuda::CanDequantizeToBf16(type));
    const int64_t n =
        int64_t(traits->block_size) * (traits->block_size == 1 ? 777 : 1 + rng() % 12);
    const int64_t rows = 1 + int64_t(rng() % 20);
    const uint64_t row_bytes = *kernels::RowBytes(type, uint64_t(n));
    std::vector<uint8_t> src(rows * row_bytes);
    for (auto& x : src) x = uint8_t(rng());
    const std::vector<int> halves = HalfFields(type);
    for (uint64_t off = 0; off < src.size(); off += traits->type_size) {
      for (int f : halves) {
        const uint16_t h = kernels::F32ToF16(scale(rng));
        src[off + f] = uint8_t(h & 0xff);
        src[off + f + 1] = uint8_t(h >> 8);
      }
    }
    if (type == GgmlType::kF16) {  // keep halves finite (NaN payloads are not the point here)
      for (size_t i = 0; i + 1 < src.size(); i += 2) src[i + 1] &= 0xbb;
    }
    std::vector<uint16_t> ref(rows * n);
    std::vector<float> row(n);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_TRUE(kernels::DequantizeRow(type, src.data() + r * row_bytes, row.data(), n));
      for (int64_t i = 0; i < n; ++i) ref[r * n + i] = kernels::F32ToBf16(row[i]);
    }
    DeviceBuffer<uint8_t> d_src(src);
    DeviceBuffer<uint16_t> d_dst(rows * n);
    HEADWISE_CUDA_ASSERT(d_dst.Poison());
    HEADWISE_CUDA_ASSERT(
        kernels::cuda::DequantizeRowsToBf16(type, d_src.get(), d_dst.get(), rows, n, nullptr));
    const std::vector<uint16_t> got = d_dst.Download();
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], ref[i]) << "element " << i << " of " << rows << " x " << n;
    }
  }
  EXPECT_FALSE(kernels::cuda::CanDequantizeToBf16(GgmlType::kQ2_K));
  EXPECT_EQ(kernels::cuda::DequantizeRowsToBf16(GgmlType::kQ2_K, nullptr, nullptr, 1, 256, nullptr),
            cudaErrorNotSupported);
  EXPECT_EQ(kernels::cuda::DequantizeRowsToBf16(GgmlType::kQ4_0, nullptr, nullptr, 1, 33, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace headwise
