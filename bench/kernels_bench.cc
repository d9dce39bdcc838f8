// Micro-benchmarks of the CPU kernels (Google Benchmark; run with
// --benchmark_format=json for JSON). Decode attention reports KV bytes read
// per second, the figure that bounds long-context decode.
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/attention.h"
#include "kernels/key_quant.h"
#include "kernels/lse.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace {

using headwise::kernels::KvDtype;

void BM_DecodeAttention(benchmark::State& state) {
  const int tokens = static_cast<int>(state.range(0));
  const auto dtype = static_cast<KvDtype>(state.range(1));
  const int head_dim = 64, n_kv = 3, group = 3, block = 256;
  const size_t elem = headwise::kernels::KvDtypeSize(dtype);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> kv_f32(size_t(tokens) * head_dim);
  for (float& x : kv_f32) x = normal(rng);
  std::vector<uint8_t> k(kv_f32.size() * elem * n_kv), v(k.size());
  for (int h = 0; h < n_kv; ++h) {
    headwise::kernels::ToKvDtype(dtype, kv_f32.data(), k.data() + h * kv_f32.size() * elem,
                                 kv_f32.size());
    headwise::kernels::ToKvDtype(dtype, kv_f32.data(), v.data() + h * kv_f32.size() * elem,
                                 kv_f32.size());
  }
  const int n_blocks = (tokens + block - 1) / block;
  std::vector<headwise::kernels::KvBlockView> views;
  for (int h = 0; h < n_kv; ++h) {
    for (int b = 0; b < n_blocks; ++b) {
      const size_t off = (size_t(h) * tokens + size_t(b) * block) * head_dim * elem;
      views.push_back(
          {k.data() + off, v.data() + off, std::min(block, tokens - b * block), b * block});
    }
  }
  std::vector<float> q(n_kv * group * head_dim), o(q.size()), lse(n_kv * group);
  for (float& x : q) x = normal(rng);
  headwise::kernels::PartialAttentionArgs args;
  args.head_dim = head_dim;
  args.group_size = group;
  args.n_kv_heads = n_kv;
  args.n_rows = 1;
  args.q = q.data();
  args.kv_dtype = dtype;
  args.blocks = views.data();
  args.n_blocks = n_blocks;
  args.scale = 0.125f;
  args.o = o.data();
  args.lse = lse.data();
  for (auto _ : state) {
    headwise::kernels::PartialAttention(args);
    benchmark::DoNotOptimize(o.data());
  }
  state.SetBytesProcessed(state.iterations() * int64_t(k.size() + v.size()));
}
BENCHMARK(BM_DecodeAttention)
    ->ArgsProduct({{4096, 32768}, {0, 1, 2}})
    ->ArgNames({"tokens", "dtype"});

void BM_LseMerge(benchmark::State& state) {
  const int rows = 4096 * 9, dim = 64;
  std::vector<float> o_a(rows * dim, 0.5f), o_b(rows * dim, 0.25f), l_a(rows, 1.0f),
      l_b(rows, 2.0f);
  for (auto _ : state) {
    headwise::kernels::LseMerge(o_a.data(), l_a.data(), o_b.data(), l_b.data(), rows, dim);
    benchmark::DoNotOptimize(o_a.data());
  }
  state.SetBytesProcessed(state.iterations() * int64_t(3) * rows * dim * 4);
}
BENCHMARK(BM_LseMerge);

void BM_DequantizeQ4_1(benchmark::State& state) {
  const int n = 576 * 1536;
  const auto row = *headwise::kernels::RowBytes(headwise::kernels::GgmlType::kQ4_1, n);
  std::vector<uint8_t> src(row);
  std::mt19937 rng(3);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  for (size_t i = 0; i < src.size(); i += 20) {  // sane f16 scales: d = m = 0.01
    src[i] = 0x1f, src[i + 1] = 0x21, src[i + 2] = 0x1f, src[i + 3] = 0x21;
  }
  std::vector<float> dst(n);
  for (auto _ : state) {
    headwise::kernels::DequantizeRow(headwise::kernels::GgmlType::kQ4_1, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t(n));
}
BENCHMARK(BM_DequantizeQ4_1);

// quantkv's and hybrid's per-step scoring: one kv head's group of 3
// queries against every token's quantized key (rows per second).
void BM_QuantizedKeyScores(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const headwise::kernels::KeyQuantFormat f{static_cast<int32_t>(state.range(1)), 32, 64};
  const int32_t n_q = 3;
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::vector<float> x(size_t(tokens) * f.dim), q(size_t(n_q) * f.dim);
  for (float& v : x) v = normal(rng);
  for (float& v : q) v = normal(rng);
  std::vector<uint8_t> codes(size_t(tokens * f.CodeBytes()));
  std::vector<float> scale_zero(size_t(tokens) * f.Groups() * 2), scores(size_t(n_q * tokens));
  headwise::kernels::QuantizeKeys(f, x.data(), f.dim, tokens, codes.data(), scale_zero.data());
  for (auto _ : state) {
    headwise::kernels::QuantizedKeyScoresMulti(f, q.data(), n_q, codes.data(), scale_zero.data(),
                                               tokens, scores.data(), tokens);
    benchmark::DoNotOptimize(scores.data());
  }
  state.SetItemsProcessed(state.iterations() * tokens);
}
BENCHMARK(BM_QuantizedKeyScores)->ArgsProduct({{8192}, {4, 2}})->ArgNames({"tokens", "bits"});

}  // namespace

BENCHMARK_MAIN();
