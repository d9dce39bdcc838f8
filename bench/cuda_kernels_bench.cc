// CUDA kernel benchmark: split-KV decode attention bandwidth (KV bytes read per
// second of kernel time, merge included) at long contexts in the Llama-3-8B
// shape, one call at a time and 32 layers back to back (as a decode step runs
// it), as a fraction of the device-to-device copy bandwidth measured in the
// same run; pinned host<->device copy bandwidth; causal prefill attention
// throughput. CUDA events time each run; L2 is flushed before every timed run
// (by reading other memory) so no KV is served from cache. Writes one JSON object.
//   cuda_kernels_bench [--json PATH] [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/machine_info.h"
#include "kernels/attention.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"

namespace {

using headwise::kernels::KvBlockView;
using headwise::kernels::KvDtype;
using nlohmann::json;

#define CHECK_CUDA(call)                                                 \
  do {                                                                   \
    const cudaError_t err_ = (call);                                     \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(err_));                            \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `fn` (enqueued on `stream`) `reps` times after `warmup` runs; `before`
// runs untimed ahead of each. Returns per-run milliseconds.
template <typename Fn, typename Before>
std::vector<double> Time(cudaStream_t stream, int warmup, int reps, Fn fn, Before before) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    before();
    CHECK_CUDA(cudaEventRecord(start, stream));
    fn();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i >= warmup) ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return ms;
}

// Fills `bytes` of device memory with random bf16 values in [-1, 1] (one
// 64 MiB random pattern, generated once, repeated).
void FillRandomBf16(void* dst, size_t bytes, std::mt19937_64& rng) {
  static std::vector<uint16_t> host;
  if (host.empty()) {
    host.resize(size_t{32} << 20);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (auto& x : host) x = headwise::kernels::F32ToBf16(uni(rng));
  }
  const size_t chunk = host.size() * 2;
  for (size_t off = 0; off < bytes; off += chunk) {
    CHECK_CUDA(cudaMemcpy(static_cast<char*>(dst) + off, host.data(), std::min(chunk, bytes - off),
                          cudaMemcpyHostToDevice));
  }
}

struct AttentionSetup {
  int n_kv = 8, group = 4, head_dim = 128, block_tokens = 256;
  int64_t tokens = 0;  // per kv head
};

// Device KV for `s`: per kv head, blocks of block_tokens tokens, K then V.
struct DeviceKv {
  void* pool = nullptr;
  KvBlockView* blocks = nullptr;
  int32_t n_blocks = 0;
  size_t kv_bytes = 0;
  DeviceKv(const AttentionSetup& s, std::mt19937_64& rng) {
    const size_t block_bytes = size_t{2} * s.block_tokens * s.head_dim * 2;
    n_blocks = int32_t((s.tokens + s.block_tokens - 1) / s.block_tokens);
    kv_bytes = size_t(s.tokens) * s.n_kv * s.head_dim * 2 * 2;
    CHECK_CUDA(cudaMalloc(&pool, block_bytes * n_blocks * s.n_kv));
    FillRandomBf16(pool, block_bytes * n_blocks * s.n_kv, rng);
    std::vector<KvBlockView> views;
    for (int h = 0; h < s.n_kv; ++h) {
      for (int32_t b = 0; b < n_blocks; ++b) {
        char* base = static_cast<char*>(pool) + (size_t(h) * n_blocks + b) * block_bytes;
        KvBlockView v;
        v.n_tokens =
            int32_t(std::min<int64_t>(s.block_tokens, s.tokens - int64_t(b) * s.block_tokens));
        v.first_pos = b * s.block_tokens;
        v.k = base;
        v.v = base + block_bytes / 2;
        views.push_back(v);
      }
    }
    CHECK_CUDA(cudaMalloc(&blocks, views.size() * sizeof(KvBlockView)));
    CHECK_CUDA(cudaMemcpy(blocks, views.data(), views.size() * sizeof(KvBlockView),
                          cudaMemcpyHostToDevice));
  }
  ~DeviceKv() {
    cudaFree(pool);
    cudaFree(blocks);
  }
};

json CopyBandwidth(cudaStream_t stream, bool quick) {
  const size_t bytes = size_t{1} << 30;
  void *a, *b, *host;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  const int reps = quick ? 5 : 20;
  const double d2d_ms = Median(Time(
      stream, 3, reps,
      [&] { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); }, [] {}));
  CHECK_CUDA(cudaHostAlloc(&host, bytes, cudaHostAllocDefault));
  std::memset(host, 1, bytes);
  const double h2d_ms = Median(Time(
      stream, 2, quick ? 3 : 10,
      [&] { CHECK_CUDA(cudaMemcpyAsync(a, host, bytes, cudaMemcpyHostToDevice, stream)); }, [] {}));
  const double d2h_ms = Median(Time(
      stream, 2, quick ? 3 : 10,
      [&] { CHECK_CUDA(cudaMemcpyAsync(host, a, bytes, cudaMemcpyDeviceToHost, stream)); }, [] {}));
  CHECK_CUDA(cudaFreeHost(host));
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return {{"bytes", bytes},
          {"d2d_ms", d2d_ms},
          {"d2d_read_plus_write_gbps", 2.0 * bytes / d2d_ms / 1e6},
          {"d2d_note",
           "cudaMemcpyAsync device->device; GB/s counts bytes read + bytes written (2x size), 1 GB "
           "= 1e9 B"},
          {"h2d_pinned_gbps", bytes / h2d_ms / 1e6},
          {"d2h_pinned_gbps", bytes / d2h_ms / 1e6}};
}

// One decode step's attention (1 query row) over a DeviceKv, ready to enqueue.
class DecodeRun {
 public:
  DecodeRun(const AttentionSetup& s, std::mt19937_64& rng) : kv_(s, rng) {
    const int64_t heads = int64_t{s.n_kv} * s.group;
    std::vector<float> q(heads * s.head_dim);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : q) x = normal(rng);
    CHECK_CUDA(cudaMalloc(&q_, q.size() * 4));
    CHECK_CUDA(cudaMalloc(&o_, q.size() * 4));
    CHECK_CUDA(cudaMalloc(&lse_, heads * 4));
    CHECK_CUDA(cudaMemcpy(q_, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
    a_.head_dim = s.head_dim;
    a_.group_size = s.group;
    a_.n_kv_heads = s.n_kv;
    a_.n_rows = 1;
    a_.q = q_;
    a_.kv_dtype = KvDtype::kBF16;
    a_.blocks = kv_.blocks;
    a_.n_blocks = kv_.n_blocks;
    a_.scale = 1.0f / std::sqrt(float(s.head_dim));
    a_.o = o_;
    a_.lse = lse_;
    CHECK_CUDA(headwise::kernels::cuda::PartialAttentionWorkspaceBytes(a_, &ws_bytes_));
    if (ws_bytes_ > 0) CHECK_CUDA(cudaMalloc(&ws_, ws_bytes_));
  }
  ~DecodeRun() {
    cudaFree(ws_);
    cudaFree(q_);
    cudaFree(o_);
    cudaFree(lse_);
  }
  void Enqueue(cudaStream_t stream) {
    CHECK_CUDA(headwise::kernels::cuda::PartialAttention(a_, ws_, ws_bytes_, stream));
  }
  bool LseFinite() const {
    std::vector<float> lse(a_.n_kv_heads * a_.group_size);
    CHECK_CUDA(cudaMemcpy(lse.data(), lse_, lse.size() * 4, cudaMemcpyDeviceToHost));
    return std::all_of(lse.begin(), lse.end(), [](float x) { return std::isfinite(x); });
  }
  size_t kv_bytes() const { return kv_.kv_bytes; }
  size_t workspace_bytes() const { return ws_bytes_; }

 private:
  DeviceKv kv_;
  float *q_ = nullptr, *o_ = nullptr, *lse_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  headwise::kernels::PartialAttentionArgs a_;
};

// `flush` streams a separate KV of 4x L2 before each timed run: reads only, so
// L2 holds no KV of the timed run and no dirty lines to write back during it
// (a memset flush leaves ~L2 of dirty lines, 17 us of write-back at 3 TB/s).
json DecodeAttention(const AttentionSetup& s, cudaStream_t stream, DecodeRun& flush, void* scratch,
                     size_t scratch_bytes, double copy_gbps, std::mt19937_64& rng, bool quick) {
  DecodeRun run(s, rng);
  const std::vector<double> ms = Time(
      stream, 3, quick ? 5 : 20, [&] { run.Enqueue(stream); }, [&] { flush.Enqueue(stream); });
  const double med = Median(ms), best = *std::min_element(ms.begin(), ms.end());
  const double gbps = run.kv_bytes() / med / 1e6;
  // For comparison: the same after a memset flush (dirty L2 written back in the timed run).
  const double med_memset = Median(Time(
      stream, 1, quick ? 3 : 10, [&] { run.Enqueue(stream); },
      [&] { CHECK_CUDA(cudaMemsetAsync(scratch, 0, scratch_bytes, stream)); }));
  return {{"tokens", s.tokens},
          {"median_us_after_memset_flush", med_memset * 1e3},
          {"kv_bytes", run.kv_bytes()},
          {"workspace_bytes", run.workspace_bytes()},
          {"median_us", med * 1e3},
          {"best_us", best * 1e3},
          {"kv_read_gbps", gbps},
          {"kv_read_gbps_best", run.kv_bytes() / best / 1e6},
          {"fraction_of_d2d_copy", gbps / copy_gbps},
          {"lse_finite", run.LseFinite()}};
}

// A decode step's attention for every layer back to back (one KV per layer,
// as a forward pass runs them): launch and merge overheads overlap the
// neighbouring layers' kernels, as they do in a real decode step.
json DecodeLayers(const AttentionSetup& s, int layers, cudaStream_t stream, DecodeRun& flush,
                  double copy_gbps, std::mt19937_64& rng) {
  std::vector<std::unique_ptr<DecodeRun>> runs;
  for (int l = 0; l < layers; ++l) runs.push_back(std::make_unique<DecodeRun>(s, rng));
  const std::vector<double> ms = Time(
      stream, 1, 5,
      [&] {
        for (auto& r : runs) r->Enqueue(stream);
      },
      [&] { flush.Enqueue(stream); });
  const double med = Median(ms);
  const double bytes = double(runs[0]->kv_bytes()) * layers;
  return {{"tokens", s.tokens},
          {"layers", layers},
          {"median_us_all_layers", med * 1e3},
          {"median_us_per_layer", med * 1e3 / layers},
          {"kv_read_gbps", bytes / med / 1e6},
          {"fraction_of_d2d_copy", bytes / med / 1e6 / copy_gbps}};
}

// Causal prefill: `rows` new tokens at the end of a `tokens`-token context.
json PrefillAttention(const AttentionSetup& s, int64_t rows, cudaStream_t stream,
                      std::mt19937_64& rng) {
  DeviceKv kv(s, rng);
  const int64_t heads = int64_t{s.n_kv} * s.group;
  std::vector<float> q(rows * heads * s.head_dim);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : q) x = normal(rng);
  std::vector<int32_t> pos(rows);
  double pairs = 0;  // (query row, visible key) pairs per q head
  for (int64_t r = 0; r < rows; ++r) {
    pos[r] = int32_t(s.tokens - rows + r);
    pairs += pos[r] + 1;
  }
  float *d_q, *d_o, *d_lse;
  int32_t* d_pos;
  CHECK_CUDA(cudaMalloc(&d_q, q.size() * 4));
  CHECK_CUDA(cudaMalloc(&d_o, q.size() * 4));
  CHECK_CUDA(cudaMalloc(&d_lse, rows * heads * 4));
  CHECK_CUDA(cudaMalloc(&d_pos, rows * 4));
  CHECK_CUDA(cudaMemcpy(d_q, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_pos, pos.data(), rows * 4, cudaMemcpyHostToDevice));
  headwise::kernels::PartialAttentionArgs a;
  a.head_dim = s.head_dim;
  a.group_size = s.group;
  a.n_kv_heads = s.n_kv;
  a.n_rows = rows;
  a.q = d_q;
  a.q_pos = d_pos;
  a.causal = true;
  a.kv_dtype = KvDtype::kBF16;
  a.blocks = kv.blocks;
  a.n_blocks = kv.n_blocks;
  a.scale = 1.0f / std::sqrt(float(s.head_dim));
  a.o = d_o;
  a.lse = d_lse;
  const std::vector<double> ms = Time(
      stream, 1, 3,
      [&] { CHECK_CUDA(headwise::kernels::cuda::PartialAttention(a, nullptr, 0, stream)); }, [] {});
  cudaFree(d_q);
  cudaFree(d_o);
  cudaFree(d_lse);
  cudaFree(d_pos);
  const double med = Median(ms);
  const double flops = pairs * heads * s.head_dim * 4.0;  // QK^T and PV, 2 flops per MAC
  return {{"rows", rows},
          {"context_tokens", s.tokens},
          {"median_ms", med},
          {"tflops", flops / med / 1e9}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--quick]\n", argv[0]);
      return 2;
    }
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  std::mt19937_64 rng(42);

  json out;
  out["machine"] = headwise::bench::MachineInfo();
  out["gpu"] = {{"name", prop.name},
                {"sms", prop.multiProcessorCount},
                {"l2_bytes", prop.l2CacheSize},
                {"memory_bytes", prop.totalGlobalMem},
                {"cc", std::to_string(prop.major) + "." + std::to_string(prop.minor)}};
  out["copy"] = CopyBandwidth(stream, quick);
  const double copy_gbps = out["copy"]["d2d_read_plus_write_gbps"];

  AttentionSetup s;  // Llama-3-8B: 32 q heads, 8 kv heads, head_dim 128, bf16 KV
  AttentionSetup flush_setup;
  flush_setup.tokens = int64_t{4} * prop.l2CacheSize / (s.n_kv * s.head_dim * 2 * 2);
  DecodeRun flush(flush_setup, rng);
  const size_t scratch_bytes = size_t{4} * prop.l2CacheSize;
  void* scratch;
  CHECK_CUDA(cudaMalloc(&scratch, scratch_bytes));
  out["decode_shape"] =
      "Llama-3-8B: 32 q heads, 8 kv heads (GQA 4), head_dim 128, bf16 KV, "
      "256-token blocks, 1 query row; KV bytes = tokens * 8 * 128 * 2 (K,V) * 2 B";
  out["l2_flush"] = "before each timed run, the same kernel reads a separate KV of 4x L2 bytes";
  for (const int64_t tokens : {int64_t{8192}, int64_t{32768}, int64_t{131072}, int64_t{1} << 20}) {
    s.tokens = tokens;
    out["decode"].push_back(
        DecodeAttention(s, stream, flush, scratch, scratch_bytes, copy_gbps, rng, quick));
    std::fprintf(stderr, "decode %lld tokens: %s\n", static_cast<long long>(tokens),
                 out["decode"].back().dump().c_str());
  }
  CHECK_CUDA(cudaFree(scratch));
  for (const int64_t tokens : {int64_t{8192}, int64_t{32768}, int64_t{131072}}) {
    s.tokens = tokens;
    out["decode_32_layers"].push_back(DecodeLayers(s, 32, stream, flush, copy_gbps, rng));
    std::fprintf(stderr, "decode 32 layers x %lld tokens: %s\n", static_cast<long long>(tokens),
                 out["decode_32_layers"].back().dump().c_str());
  }
  s.tokens = 8192;
  out["prefill"] = PrefillAttention(s, 2048, stream, rng);
  CHECK_CUDA(cudaStreamDestroy(stream));

  const std::string text = out.dump(2);
  std::printf("%s\n", text.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << text << "\n";
  return 0;
}
