// The CUDA embedding lookup copies table rows by token id exactly; ids outside
// the vocabulary give NaN rows.
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/embed.cuh"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using testing::DeviceBuffer;

TEST(CudaEmbedTest, GathersRows) {
  HEADWISE_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::TestSeed() + 40);
  const int64_t vocab = 1000, dim = 576;
  std::vector<float> table(vocab * dim);
  for (float& v : table) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<int32_t> ids(300);
  for (auto& id : ids) id = int32_t(rng() % vocab);
  ids[7] = -1;
  ids[8] = int32_t(vocab);
  DeviceBuffer<float> d_table(table), d_out(ids.size() * dim);
  DeviceBuffer<int32_t> d_ids(ids);
  HEADWISE_CUDA_ASSERT(d_out.Poison());
  HEADWISE_CUDA_ASSERT(kernels::cuda::Embed(d_out.get(), d_table.get(), vocab, dim, d_ids.get(),
                                            int64_t(ids.size()), nullptr));
  const std::vector<float> got = d_out.Download();
  for (size_t r = 0; r < ids.size(); ++r) {
    for (int64_t d = 0; d < dim; ++d) {
      if (r == 7 || r == 8) {
        ASSERT_TRUE(std::isnan(got[r * dim + d]));
      } else {
        ASSERT_EQ(got[r * dim + d], table[ids[r] * dim + d]) << "row " << r << " dim " << d;
      }
    }
  }
}

}  // namespace
}  // namespace headwise
