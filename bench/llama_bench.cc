// End-to-end CPU benchmark of the reference forward pass: prefill tokens/s at
// given prompt lengths, decode tokens/s at given contexts (the KV cache is
// filled with random K/V of that length, which costs the same to attend as a
// real prefill and takes seconds instead of minutes), a STREAM-style triad,
// and decode as a fraction of the memory-bandwidth roofline
// (bytes moved per decode step = f32 weights + KV read). Writes one JSON object.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>

#include "CLI/CLI.hpp"
#include "bench/machine_info.h"
#include "nlohmann/json.hpp"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"

namespace {

using headwise::kernels::KvDtype;
using headwise::model::LlamaModel;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::vector<int32_t> SyntheticPrompt(int n, int vocab) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id(100, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& x : ids) x = id(rng);
  return ids;
}

// Bytes of f32 weights one decode step reads (every matrix and vector once).
int64_t DecodeWeightBytes(const headwise::model::ModelInfo& info) {
  const int64_t d = info.n_embd, ff = info.n_ff, hd = info.head_dim;
  const int64_t per_layer =
      d * info.n_heads * hd * 2 + d * info.n_kv_heads * hd * 2 + 3 * d * ff + 2 * d;
  return 4 * (info.n_layers * per_layer + info.vocab_size * d + d);
}

// An all-resident store on `device` (the reference layout) for `capacity` tokens.
std::unique_ptr<headwise::kv::KvStore> NewStore(const LlamaModel& model,
                                                headwise::device::Device& device,
                                                int64_t capacity) {
  headwise::kv::KvStoreOptions options;
  options.geometry = model.KvGeometryFor(256, KvDtype::kF32);
  options.device = &device;
  options.capacity_tokens = capacity;
  auto store = headwise::kv::KvStore::Create(options);
  if (!store.ok()) {
    std::cerr << "llama_bench: " << store.status().message() << "\n";
    std::exit(1);
  }
  return std::move(*store);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"headwise CPU forward benchmark (JSON out)"};
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::vector<int> prefill = {512, 4096};
  std::vector<int> contexts = {4096, 8192};
  int steps = 16, threads = 0, prefill_chunk = 4096;
  std::string out_path;
  app.add_option("-m,--model", model_path);
  app.add_option("--prefill", prefill, "Prompt lengths to time prefill at")->delimiter(',');
  app.add_option("--decode-context", contexts, "Contexts to time decode at")->delimiter(',');
  app.add_option("--decode-steps", steps, "Decode steps per context");
  app.add_option("--prefill-chunk", prefill_chunk);
  app.add_option("--threads", threads, "0: all cores");
  app.add_option("--out", out_path, "JSON output file (default: stdout)");
  CLI11_PARSE(app, argc, argv);

  headwise::runtime::ThreadPool pool(threads);
  std::unique_ptr<headwise::device::Device> cpu = headwise::device::MakeCpuDevice(&pool);
  auto loaded = LlamaModel::Load(model_path, &pool);
  if (!loaded.ok()) {
    std::cerr << "llama_bench: " << loaded.status().message() << "\n";
    return 1;
  }
  LlamaModel& model = **loaded;
  const auto& info = model.info();

  nlohmann::json report = {{"benchmark", "llama_bench"},
                           {"machine", headwise::bench::MachineInfo()},
                           {"model", model_path},
                           {"threads", pool.size()},
                           {"kv_dtype", "f32"}};
  const double triad = headwise::bench::TriadGBps(size_t(256) << 20, pool.size(), 5);
  report["triad_gbps"] = triad;
  std::fprintf(stderr, "triad: %.1f GB/s\n", triad);

  std::vector<float> logits;
  for (int n : prefill) {
    auto store = NewStore(model, *cpu, n);
    headwise::kv::KvStore& cache = *store;
    const std::vector<int32_t> prompt = SyntheticPrompt(n, static_cast<int>(info.vocab_size));
    const auto start = Clock::now();
    for (int b = 0; b < n; b += prefill_chunk) {
      const int len = std::min(prefill_chunk, n - b);
      auto status = model.Forward(std::span<const int32_t>(prompt).subspan(b, len), cache,
                                  b + len == n ? &logits : nullptr);
      if (!status.ok()) {
        std::cerr << "llama_bench: " << status.message() << "\n";
        return 1;
      }
    }
    const double s = Since(start);
    report["prefill"].push_back({{"prompt_tokens", n}, {"seconds", s}, {"tokens_per_s", n / s}});
    std::fprintf(stderr, "prefill %d tokens: %.2f s, %.1f tok/s\n", n, s, n / s);
  }

  const int64_t weight_bytes = DecodeWeightBytes(info);
  const int64_t kv_per_token = 2 * info.n_layers * info.n_kv_heads * info.head_dim * 4;
  for (int context : contexts) {
    auto store = NewStore(model, *cpu, context + steps + 1);
    headwise::kv::KvStore& cache = *store;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t row = info.n_kv_heads * info.head_dim;
    std::vector<float> k(int64_t(context) * row), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    for (int layer = 0; layer < info.n_layers; ++layer) {
      if (auto s = cache.Append(layer, k.data(), v.data(), context, row); !s.ok()) {
        std::cerr << "llama_bench: " << s.message() << "\n";
        return 1;
      }
      (void)cache.Seal(layer);
    }
    int32_t token = 1000;
    auto status = model.Forward(std::span<const int32_t>(&token, 1), cache, &logits);  // warm-up
    const auto start = Clock::now();
    for (int i = 0; i < steps && status.ok(); ++i) {
      status = model.Forward(std::span<const int32_t>(&token, 1), cache, &logits);
    }
    if (!status.ok()) {
      std::cerr << "llama_bench: " << status.message() << "\n";
      return 1;
    }
    const double step = Since(start) / steps;
    const double bytes = double(weight_bytes) + double(kv_per_token) * (context + steps);
    const double gbps = bytes / step / 1e9;
    report["decode"].push_back({{"context_tokens", context},
                                {"step_seconds", step},
                                {"tokens_per_s", 1.0 / step},
                                {"bytes_per_step", bytes},
                                {"weight_bytes", weight_bytes},
                                {"kv_bytes", bytes - weight_bytes},
                                {"achieved_gbps", gbps},
                                {"roofline_fraction", gbps / triad}});
    std::fprintf(stderr, "decode at %d: %.1f ms/token, %.2f tok/s, %.1f GB/s = %.0f%% of triad\n",
                 context, step * 1e3, 1.0 / step, gbps, 100 * gbps / triad);
  }

  if (!headwise::bench::WriteReport(report, out_path)) {
    std::cerr << "cannot write " << out_path << "\n";
    return 1;
  }
  return 0;
}
