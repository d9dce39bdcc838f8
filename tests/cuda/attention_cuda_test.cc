// The CUDA PartialAttention equals the CPU kernel on fresh random cases: GQA
// group sizes 1/3/4/8, head_dim 64/128 (and 32/80/256 for the padded and
// element-wise load paths), 0..5000 tokens per kv head in random block splits
// with empty blocks, shuffled block order and misaligned blocks, empty block
// lists (lse = -inf), causal prefill rows, strided q/o/lse, f32/f16/bf16 KV,
// with and without split-KV workspace. Outputs are NaN-poisoned before each
// call. The seed is printed; HEADWISE_TEST_SEED replays a run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/attention.cuh"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/device_buffer.h"

namespace headwise {
namespace {

using kernels::KvBlockView;
using kernels::KvDtype;
using testing::DeviceBuffer;

constexpr float kInf = std::numeric_limits<float>::infinity();
// Both sides accumulate in f32 from exactly the same KV values; measured
// differences are a few 1e-7, the bounds leave room for long contexts.
constexpr double kOTol = 3e-5;    // absolute; |o| <= 1 (convex mix of V in [-1, 1])
constexpr double kLseTol = 3e-5;  // times (1 + |lse|)

// The CPU reference on every core (the GPU cases are larger than unit tests').
class ThreadFor final : public kernels::ParallelFor {
 public:
  void Run(int64_t n, const std::function<void(int64_t, int64_t)>& fn) const override {
    const int64_t threads = std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t) {
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      if (begin < end) pool.emplace_back([&fn, begin, end] { fn(begin, end); });
    }
    for (auto& th : pool) th.join();
  }
};

struct Shape {
  int head_dim = 128, group = 4, n_kv = 1;
  int64_t n_rows = 1;
  KvDtype dtype = KvDtype::kBF16;
  bool causal = false;
  bool strided = false;     // padded q/o/lse rows
  bool misalign = false;    // some blocks start off 16-byte alignment
  bool shuffle = false;     // blocks out of position order
  std::vector<int> tokens;  // per kv head
  int max_block = 256;
};

struct Errors {
  double o = 0, lse = 0;
};

// Runs one shape on CPU and GPU (split and unsplit) and compares.
void RunShape(const Shape& s, std::mt19937_64& rng, Errors* worst) {
  const size_t es = kernels::KvDtypeSize(s.dtype);
  const int64_t heads = int64_t{s.n_kv} * s.group;
  const int64_t q_stride = heads * s.head_dim + (s.strided ? 7 : 0);
  const int64_t lse_stride = heads + (s.strided ? 3 : 0);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // Blocks per head: random sizes (some empty), padded with empty blocks to a common count.
  std::vector<std::vector<KvBlockView>> views(s.n_kv);
  std::vector<std::vector<size_t>> offsets(s.n_kv);  // byte offset of K in the pool
  std::vector<uint8_t> pool;
  std::uniform_int_distribution<int> block_len(0, s.max_block);
  for (int h = 0; h < s.n_kv; ++h) {
    int pos = 0;
    while (pos < s.tokens[h]) {
      const int n = std::min(block_len(rng), s.tokens[h] - pos);
      KvBlockView v;
      v.n_tokens = n;
      v.first_pos = pos;
      size_t off = (pool.size() + 15) / 16 * 16;
      if (s.misalign && rng() % 3 == 0) off += es;
      const size_t bytes = size_t(n) * s.head_dim * es;
      pool.resize(off + 2 * bytes);
      std::vector<float> vals(size_t(n) * s.head_dim * 2);
      for (float& x : vals) x = uni(rng);
      kernels::ToKvDtype(s.dtype, vals.data(), pool.data() + off, int64_t(vals.size()));
      views[h].push_back(v);
      offsets[h].push_back(n > 0 ? off : SIZE_MAX);
      pos += n;
    }
    if (s.shuffle) {
      std::vector<size_t> perm(views[h].size());
      for (size_t i = 0; i < perm.size(); ++i) perm[i] = i;
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<KvBlockView> v2;
      std::vector<size_t> o2;
      for (size_t i : perm) v2.push_back(views[h][i]), o2.push_back(offsets[h][i]);
      views[h] = v2;
      offsets[h] = o2;
    }
  }
  size_t n_blocks = 0;
  for (auto& v : views) n_blocks = std::max(n_blocks, v.size());
  if (rng() % 4 == 0) n_blocks += 1;  // trailing empty block, null pointers
  for (int h = 0; h < s.n_kv; ++h) {
    views[h].resize(n_blocks);
    offsets[h].resize(n_blocks, SIZE_MAX);
  }
  DeviceBuffer<uint8_t> d_pool(pool);
  ASSERT_TRUE(d_pool.ok());
  std::vector<KvBlockView> host_views, dev_views;
  for (int h = 0; h < s.n_kv; ++h) {
    for (size_t b = 0; b < n_blocks; ++b) {
      KvBlockView hv = views[h][b], dv = views[h][b];
      if (offsets[h][b] != SIZE_MAX) {
        const size_t bytes = size_t(hv.n_tokens) * s.head_dim * es;
        hv.k = pool.data() + offsets[h][b];
        hv.v = pool.data() + offsets[h][b] + bytes;
        dv.k = d_pool.get() + offsets[h][b];
        dv.v = d_pool.get() + offsets[h][b] + bytes;
      }
      host_views.push_back(hv);
      dev_views.push_back(dv);
    }
  }
  DeviceBuffer<KvBlockView> d_views(dev_views);

  const int max_tokens = *std::max_element(s.tokens.begin(), s.tokens.end());
  std::vector<float> q(size_t(s.n_rows) * q_stride);
  for (float& x : q) x = normal(rng);
  std::vector<int32_t> q_pos(s.n_rows);
  std::uniform_int_distribution<int> pos_dist(-3, max_tokens + 3);
  for (auto& p : q_pos) p = pos_dist(rng);
  DeviceBuffer<float> d_q(q);
  DeviceBuffer<int32_t> d_pos(q_pos);
  DeviceBuffer<float> d_o(size_t(s.n_rows) * q_stride), d_lse(size_t(s.n_rows) * lse_stride);

  kernels::PartialAttentionArgs args;
  args.head_dim = s.head_dim;
  args.group_size = s.group;
  args.n_kv_heads = s.n_kv;
  args.n_rows = s.n_rows;
  args.q_row_stride = s.strided ? q_stride : 0;
  args.o_row_stride = s.strided ? q_stride : 0;
  args.lse_row_stride = s.strided ? lse_stride : 0;
  args.kv_dtype = s.dtype;
  args.n_blocks = int32_t(n_blocks);
  args.scale = 1.0f / std::sqrt(float(s.head_dim));
  args.causal = s.causal;

  std::vector<float> o(size_t(s.n_rows) * q_stride, std::nanf("")),
      lse(size_t(s.n_rows) * lse_stride);
  ThreadFor pool_for;
  kernels::PartialAttentionArgs cpu = args;
  cpu.q = q.data();
  cpu.q_pos = q_pos.data();
  cpu.blocks = host_views.data();
  cpu.o = o.data();
  cpu.lse = lse.data();
  cpu.parallel = &pool_for;
  ASSERT_TRUE(kernels::PartialAttention(cpu));

  kernels::PartialAttentionArgs gpu = args;
  gpu.q = d_q.get();
  gpu.q_pos = d_pos.get();
  gpu.blocks = d_views.get();
  gpu.o = d_o.get();
  gpu.lse = d_lse.get();
  ASSERT_EQ(kernels::cuda::PartialAttentionDeviceArgsError(gpu), nullptr);
  size_t ws_bytes = 0;
  HEADWISE_CUDA_ASSERT(kernels::cuda::PartialAttentionWorkspaceBytes(gpu, &ws_bytes));
  DeviceBuffer<uint8_t> ws(ws_bytes);
  for (int split = 0; split < 2; ++split) {
    SCOPED_TRACE(split ? "split-KV" : "single split");
    HEADWISE_CUDA_ASSERT(d_o.Poison());
    HEADWISE_CUDA_ASSERT(d_lse.Poison());
    HEADWISE_CUDA_ASSERT(kernels::cuda::PartialAttention(gpu, split ? ws.get() : nullptr,
                                                         split ? ws_bytes : 0, nullptr));
    HEADWISE_CUDA_ASSERT(cudaDeviceSynchronize());
    const std::vector<float> g_o = d_o.Download(), g_lse = d_lse.Download();
    for (int64_t r = 0; r < s.n_rows; ++r) {
      for (int64_t hq = 0; hq < heads; ++hq) {
        const float c = lse[r * lse_stride + hq], g = g_lse[r * lse_stride + hq];
        if (std::isinf(c)) {
          ASSERT_TRUE(std::isinf(g) && g < 0) << "row " << r << " head " << hq << " lse " << g;
        } else {
          const double err = std::fabs(double(g) - c) / (1.0 + std::fabs(c));
          worst->lse = std::max(worst->lse, err);
          ASSERT_LE(err, kLseTol) << "row " << r << " head " << hq << ": " << g << " vs " << c;
        }
        for (int d = 0; d < s.head_dim; ++d) {
          const size_t i = r * q_stride + hq * s.head_dim + d;
          const double err = std::fabs(double(g_o[i]) - o[i]);
          worst->o = std::max(worst->o, err);
          ASSERT_LE(err, kOTol) << "row " << r << " head " << hq << " dim " << d << ": " << g_o[i]
                                << " vs " << o[i];
        }
      }
    }
  }
}

std::string Describe(const Shape& s) {
  std::string t;
  for (int x : s.tokens) t += std::to_string(x) + " ";
  return "head_dim " + std::to_string(s.head_dim) + " group " + std::to_string(s.group) + " n_kv " +
         std::to_string(s.n_kv) + " rows " + std::to_string(s.n_rows) + " dtype " +
         std::string(kernels::KvDtypeName(s.dtype)) + (s.causal ? " causal" : "") +
         (s.strided ? " strided" : "") + (s.misalign ? " misaligned" : "") +
         (s.shuffle ? " shuffled" : "") + " max_block " + std::to_string(s.max_block) + " tokens " +
         t;
}

Shape RandomShape(std::mt19937_64& rng, bool prefill) {
  Shape s;
  const int head_dims[] = {64, 128, 64, 128, 32, 80, 256};
  const int groups[] = {1, 3, 4, 8};
  const KvDtype dtypes[] = {KvDtype::kF32, KvDtype::kF16, KvDtype::kBF16};
  s.head_dim = head_dims[rng() % 7];
  s.group = groups[rng() % 4];
  s.n_kv = 1 + int(rng() % 3);
  s.dtype = dtypes[rng() % 3];
  s.causal = prefill || rng() % 4 == 0;
  s.n_rows = prefill ? 2 + int64_t(rng() % 40) : 1;
  s.strided = rng() % 3 == 0;
  s.misalign = rng() % 4 == 0;
  s.shuffle = rng() % 4 == 0;
  s.max_block = rng() % 2 ? 256 : 1 + int(rng() % 700);
  const int max_tokens = rng() % 4 == 0 ? 5000 : 600;
  for (int h = 0; h < s.n_kv; ++h) {
    s.tokens.push_back(rng() % 10 == 0 ? 0 : int(rng() % (max_tokens + 1)));
  }
  return s;
}

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override { HEADWISE_SKIP_WITHOUT_GPU(); }
};

TEST_F(CudaAttentionTest, DecodeMatchesCpu) {
  std::mt19937_64 rng(testing::TestSeed());
  Errors worst;
  const int cases = testing::TestCases(60);
  for (int i = 0; i < cases; ++i) {
    const Shape s = RandomShape(rng, false);
    SCOPED_TRACE("case " + std::to_string(i) + ": " + Describe(s));
    RunShape(s, rng, &worst);
    if (HasFatalFailure()) return;
  }
  std::printf("decode: %d cases, max |o| error %.3g, max lse error %.3g\n", cases, worst.o,
              worst.lse);
}

TEST_F(CudaAttentionTest, PrefillMatchesCpu) {
  std::mt19937_64 rng(testing::TestSeed() + 1);
  Errors worst;
  const int cases = testing::TestCases(40);
  for (int i = 0; i < cases; ++i) {
    const Shape s = RandomShape(rng, true);
    SCOPED_TRACE("case " + std::to_string(i) + ": " + Describe(s));
    RunShape(s, rng, &worst);
    if (HasFatalFailure()) return;
  }
  std::printf("prefill: %d cases, max |o| error %.3g, max lse error %.3g\n", cases, worst.o,
              worst.lse);
}

// Llama-3-8B decode shape over a long context: many splits, merged by LSE.
TEST_F(CudaAttentionTest, LongContextManySplits) {
  std::mt19937_64 rng(testing::TestSeed() + 2);
  Shape s;
  s.head_dim = 128;
  s.group = 4;
  s.n_kv = 2;
  s.dtype = KvDtype::kBF16;
  s.tokens = {40000, 33000};
  s.max_block = 256;
  Errors worst;
  RunShape(s, rng, &worst);
  s.causal = true;
  s.n_rows = 3;
  s.dtype = KvDtype::kF16;
  RunShape(s, rng, &worst);
}

TEST_F(CudaAttentionTest, EmptyListGivesMinusInf) {
  DeviceBuffer<float> q(std::vector<float>(2 * 8 * 64, 1.0f)), o(2 * 8 * 64), lse(2 * 8);
  kernels::PartialAttentionArgs a;
  a.head_dim = 64;
  a.group_size = 4;
  a.n_kv_heads = 2;
  a.n_rows = 2;
  a.q = q.get();
  a.o = o.get();
  a.lse = lse.get();
  a.scale = 0.125f;
  for (int n_blocks : {0, 3}) {
    std::vector<KvBlockView> empty(size_t(2 * n_blocks));  // n_tokens 0, null pointers
    DeviceBuffer<KvBlockView> d_blocks(empty);
    a.blocks = n_blocks ? d_blocks.get() : nullptr;
    a.n_blocks = n_blocks;
    HEADWISE_CUDA_ASSERT(o.Poison());
    HEADWISE_CUDA_ASSERT(lse.Poison());
    HEADWISE_CUDA_ASSERT(kernels::cuda::PartialAttention(a, nullptr, 0, nullptr));
    HEADWISE_CUDA_ASSERT(cudaDeviceSynchronize());
    for (float x : o.Download()) ASSERT_EQ(x, 0.0f);
    for (float x : lse.Download()) ASSERT_EQ(x, -kInf);
  }
}

TEST_F(CudaAttentionTest, RejectsBadArgs) {
  kernels::PartialAttentionArgs a;
  a.head_dim = 300;
  a.n_rows = 1;
  EXPECT_NE(kernels::cuda::PartialAttentionDeviceArgsError(a), nullptr);
  EXPECT_EQ(kernels::cuda::PartialAttention(a, nullptr, 0, nullptr), cudaErrorInvalidValue);
  a.head_dim = 64;
  EXPECT_EQ(kernels::cuda::PartialAttention(a, nullptr, 0, nullptr), cudaErrorInvalidValue);
  a.n_rows = 0;  // nothing to do
  EXPECT_EQ(kernels::cuda::PartialAttention(a, nullptr, 0, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace headwise
