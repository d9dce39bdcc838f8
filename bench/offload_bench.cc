// Head-wise offload benchmark (HeadInfer-style streaming on the sim device):
// decode step time vs context length for a synthetic Llama-shaped model, with
// the KV cache (a) resident on the cpu device (host memory, zero copy) and
// (b) offloaded: sealed blocks on the host, streamed head group by head group
// through the two staging buffers of a sim device with a small memory budget
// and a capped link. Per context and mode it reports the median decode step,
// the copy-engine busy time, the streamed compute and wall time, the overlap
// efficiency, the head-group plan, and the peak bytes of every memory tier.
//
// The KV cache is filled with random K/V through KvStore::Append + Seal in
// 4096-token chunks, not by a real prefill: attending to it costs the same,
// while a real prefill of 1M tokens is quadratic and would take hours here.
// Writes one JSON object (bench/plot_offload.py draws it).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/machine_info.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "runtime/attention/attend.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/kv/kv_store.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"

// OpenBLAS (cmake/HeadwiseDeps.cmake links it as BLAS): its worker threads
// spin in sched_yield for a while after every call, which on a small machine
// takes a core from the copy engine and the compute thread.
extern "C" void openblas_set_num_threads(int threads);
extern "C" int openblas_get_num_threads(void);

namespace {

using headwise::attention::StreamStats;
using headwise::device::Device;
using headwise::kernels::KvDtype;
using headwise::kv::KvStore;
using headwise::kv::Tier;
using headwise::model::LlamaModel;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int32_t kBlockTokens = 256;
constexpr int32_t kFillChunk = 4096;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "offload_bench: " << message << "\n";
  std::exit(1);
}

void Check(const absl::Status& status) {
  if (!status.ok()) Die(std::string(status.message()));
}

// "16MiB", "1GiB", "4096" -> bytes.
absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  std::string s(absl::StripAsciiWhitespace(text));
  size_t split = 0;
  while (split < s.size() &&
         (absl::ascii_isdigit(static_cast<unsigned char>(s[split])) || s[split] == '.')) {
    ++split;
  }
  double value = 0;
  const std::string number = s.substr(0, split);
  const std::string unit = absl::AsciiStrToLower(s.substr(split));
  if (number.empty() || !absl::SimpleAtod(number, &value) || !std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a size (try 16MiB)"));
  }
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  if (unit == "k" || unit == "kb" || unit == "kib") scale = 1024.0;
  if (unit == "m" || unit == "mb" || unit == "mib") scale = 1024.0 * 1024;
  if (unit == "g" || unit == "gb" || unit == "gib") scale = 1024.0 * 1024 * 1024;
  if (scale == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': unknown size unit '", unit, "' (use KiB, MiB or GiB)"));
  }
  return static_cast<int64_t>(std::llround(value * scale));
}

std::vector<double> LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  in >> a >> b >> c;
  return {a, b, c};
}

// Percent of all CPUs busy (any process) over `seconds`, from /proc/stat: the
// overlap figures need the machine to themselves, so the report says.
double CpuBusyPercent(double seconds) {
  auto sample = [] {
    std::ifstream in("/proc/stat");
    std::string cpu;
    int64_t total = 0, idle = 0, x = 0;
    in >> cpu;
    for (int i = 0; i < 8 && in >> x; ++i) {
      total += x;
      if (i == 3 || i == 4) idle += x;  // idle, iowait
    }
    return std::pair<int64_t, int64_t>(total, idle);
  };
  const auto [t0, i0] = sample();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const auto [t1, i1] = sample();
  return t1 > t0 ? 100.0 * (1.0 - double(i1 - i0) / double(t1 - t0)) : 0.0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Fast uniform random floats in [-1, 1) (xorshift64*): the KV values do not
// change the cost of attention, and 1M tokens need 256M of them.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void Fill(std::vector<float>& out) {
    for (float& x : out) {
      state_ ^= state_ >> 12;
      state_ ^= state_ << 25;
      state_ ^= state_ >> 27;
      const uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
      x = static_cast<float>(static_cast<int64_t>(r >> 40) - (int64_t{1} << 23)) /
          static_cast<float>(int64_t{1} << 23);
    }
  }

 private:
  uint64_t state_;
};

struct Setup {
  LlamaModel* model = nullptr;
  KvDtype dtype = KvDtype::kF16;
  int steps = 8;
  int64_t device_mem = 0;
  const headwise::kernels::ParallelFor* parallel = nullptr;
};

enum class Mode { kResident, kOffloaded };

// One (context, mode) measurement. `link_gbps` only matters when offloaded.
json RunOne(const Setup& setup, int64_t context, Mode mode, double link_gbps, bool verbose) {
  LlamaModel& model = *setup.model;
  const auto& info = model.info();
  const std::vector<double> load_before = LoadAverage();

  std::unique_ptr<Device> device;
  if (mode == Mode::kResident) {
    device = headwise::device::MakeCpuDevice(setup.parallel);
  } else {
    headwise::device::SimDeviceOptions sim;
    sim.memory_bytes = setup.device_mem;
    sim.link_gbps = link_gbps;
    auto made = headwise::device::MakeSimDevice(sim, setup.parallel);
    if (!made.ok()) Die(std::string(made.status().message()));
    device = std::move(*made);
  }

  headwise::kv::KvStoreOptions options;
  options.geometry = model.KvGeometryFor(kBlockTokens, setup.dtype);
  options.device = device.get();
  options.device_budget_bytes = mode == Mode::kOffloaded ? setup.device_mem : 0;
  options.capacity_tokens = context + setup.steps + 1;
  options.max_append_tokens = kFillChunk;
  auto created = KvStore::Create(options);
  if (!created.ok()) Die(std::string(created.status().message()));
  KvStore& store = **created;

  // Fill: random K/V in prefill-sized chunks, every layer, sealed as it goes.
  const int64_t row = int64_t(info.n_kv_heads) * info.head_dim;
  std::vector<float> k(int64_t(kFillChunk) * row), v(k.size());
  Random random(static_cast<uint64_t>(context));
  const auto fill_start = Clock::now();
  for (int64_t at = 0; at < context; at += kFillChunk) {
    const int64_t rows = std::min<int64_t>(kFillChunk, context - at);
    random.Fill(k);
    random.Fill(v);
    for (int32_t layer = 0; layer < static_cast<int32_t>(info.n_layers); ++layer) {
      Check(store.Append(layer, k.data(), v.data(), rows, row));
      Check(store.Seal(layer));
    }
  }
  const double fill_seconds = Since(fill_start);

  std::vector<float> logits;
  int32_t token = 17;
  {
    StreamStats warm;  // first step: page faults, scratch growth
    Check(model.Forward(std::span<const int32_t>(&token, 1), store, &logits, nullptr, &warm));
  }
  std::vector<double> step_s, copy_s, compute_s, wall_s, wait_s, overlap_stream, overlap_step;
  StreamStats last;
  int64_t bytes_staged = 0, items = 0;
  for (int i = 0; i < setup.steps; ++i) {
    token = (token * 37 + 11) % static_cast<int32_t>(info.vocab_size);
    StreamStats stats;
    const double busy_before = device->copy_stats().busy_seconds;
    const auto start = Clock::now();
    Check(model.Forward(std::span<const int32_t>(&token, 1), store, &logits, nullptr, &stats));
    const double step = Since(start);
    const double copy = device->copy_stats().busy_seconds - busy_before;
    step_s.push_back(step);
    copy_s.push_back(copy);
    compute_s.push_back(stats.compute_seconds);
    wall_s.push_back(stats.wall_seconds);
    wait_s.push_back(stats.copy_wait_seconds);
    const double bound = std::max(copy, stats.compute_seconds);
    if (bound > 0) {
      overlap_stream.push_back(stats.wall_seconds / bound);
      overlap_step.push_back(step / bound);
    }
    bytes_staged = stats.bytes_staged;
    items = stats.items;
    last = stats;
  }

  const headwise::kv::TierStats dev = store.tier_stats(Tier::kDevice);
  const headwise::kv::TierStats host = store.tier_stats(Tier::kHost);
  const headwise::device::DeviceMemoryStats arena = device->memory_stats();
  const bool streaming = store.mode() == headwise::kv::KvMode::kStreaming;
  const int64_t kv_bytes = context * options.geometry.TokenBytes();
  const double step = Median(step_s), copy = Median(copy_s), compute = Median(compute_s);
  const double wall = Median(wall_s);
  const double items_per_layer = double(items) / double(info.n_layers);
  json out = {
      {"context_tokens", context},
      {"mode", mode == Mode::kResident ? "resident" : "offloaded"},
      {"device", std::string(device->name())},
      {"kv_mode", streaming ? "streaming" : "resident"},
      {"link_gbps", mode == Mode::kOffloaded ? link_gbps : 0.0},
      {"kv_bytes", kv_bytes},
      {"fill_seconds", fill_seconds},
      {"steps", setup.steps},
      {"step_seconds", step},
      {"step_seconds_min", *std::min_element(step_s.begin(), step_s.end())},
      {"step_seconds_max", *std::max_element(step_s.begin(), step_s.end())},
      {"tokens_per_s", step > 0 ? 1.0 / step : 0.0},
      {"copy_seconds", copy},
      {"compute_seconds", compute},
      {"stream_wall_seconds", wall},
      {"copy_wait_seconds", Median(wait_s)},
      {"overlap_stream", overlap_stream.empty() ? json(nullptr) : json(Median(overlap_stream))},
      {"overlap_step", overlap_step.empty() ? json(nullptr) : json(Median(overlap_step))},
      {"head_group_size", last.head_group_size},
      {"blocks_per_group", last.blocks_per_group},
      {"items_per_step", items},
      {"items_per_layer", items_per_layer},
      // With copy == compute per item and a pipeline that fills and drains
      // once per layer, the streamed wall is (items + 1) / items of the bound.
      {"fill_drain_model_ratio",
       items_per_layer > 0 ? json((items_per_layer + 1) / items_per_layer) : json(nullptr)},
      {"bytes_staged_per_step", bytes_staged},
      {"copy_gbps", copy > 0 ? bytes_staged / copy / 1e9 : 0.0},
      {"compute_gbps", compute > 0 ? bytes_staged / compute / 1e9 : 0.0},
      {"staging_bytes", store.staging_bytes()},
      {"device_peak_bytes", dev.peak_bytes},
      {"device_budget_bytes", dev.budget_bytes},
      {"device_arena_peak_bytes", arena.peak_bytes},
      {"device_arena_budget_bytes", arena.budget_bytes},
      {"device_within_budget", dev.budget_bytes == 0 || (dev.peak_bytes <= dev.budget_bytes &&
                                                         arena.peak_bytes <= arena.budget_bytes)},
      {"host_peak_bytes", host.peak_bytes},
      {"load_average_before", load_before},
      {"load_average_after", LoadAverage()},
  };
  if (verbose) {
    std::fprintf(stderr,
                 "%8lld %-9s %-9s step %8.2f ms | copy %7.2f compute %7.2f wall %7.2f ms | "
                 "wall/max %5.3f step/max %5.3f | items/layer %5.1f | dev peak %6.2f MiB host "
                 "peak %8.2f MiB | fill %.2f s | load %.2f\n",
                 static_cast<long long>(context), out["mode"].get<std::string>().c_str(),
                 out["kv_mode"].get<std::string>().c_str(), step * 1e3, copy * 1e3, compute * 1e3,
                 wall * 1e3, overlap_stream.empty() ? 0.0 : Median(overlap_stream),
                 overlap_step.empty() ? 0.0 : Median(overlap_step), items_per_layer,
                 (streaming ? dev.peak_bytes : arena.peak_bytes) / 1048576.0,
                 host.peak_bytes / 1048576.0, fill_seconds, load_before[0]);
  }
  return out;
}

std::optional<KvDtype> DtypeFrom(const std::string& name) {
  return headwise::kernels::ParseKvDtype(name);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"headwise head-wise offload benchmark: decode vs context, resident vs sim offload"};
  std::vector<int64_t> contexts = {1024, 4096, 16384, 65536, 262144, 1048576};
  int steps = 24, threads = 0, blas_threads = 1, layers = 2, embd = 256, heads = 4, kv_heads = 2;
  std::string device_mem_text = "16MiB", link_text = "auto", dtype_text = "f16", out_path;
  int64_t calibrate_context = 262144;
  std::vector<std::string> modes = {"resident", "offloaded"};
  bool ablate_blas = true;
  app.add_option("--contexts", contexts, "Context lengths (tokens) to time decode at")
      ->delimiter(',');
  app.add_option("--steps", steps, "Timed decode steps per context and mode (median reported)")
      ->check(CLI::Range(1, 254));
  app.add_option("--device-mem", device_mem_text, "Sim device memory budget (e.g. 16MiB)");
  app.add_option("--link-gbps", link_text,
                 "Sim link cap in GB/s, or 'auto': measure the streamed compute rate at "
                 "--calibrate-context with an uncapped link and use it (copy ~ compute there)");
  app.add_option("--calibrate-context", calibrate_context, "Context of the 'auto' link choice");
  app.add_option("--kv-dtype", dtype_text, "KV dtype: f32, f16 or bf16");
  app.add_option("--modes", modes, "resident and/or offloaded")->delimiter(',');
  app.add_option("--threads", threads, "Compute threads (0: all cores)");
  app.add_option("--blas-threads", blas_threads,
                 "OpenBLAS threads for the dense part (0: OpenBLAS's default, one per core)");
  app.add_option("--ablate-blas", ablate_blas,
                 "Also time offloaded decode at --calibrate-context with OpenBLAS's default "
                 "threads, to show what its spinning workers cost the overlap");
  app.add_option("--layers", layers, "Synthetic model layers");
  app.add_option("--embd", embd, "Synthetic model n_embd");
  app.add_option("--heads", heads, "Synthetic model query heads");
  app.add_option("--kv-heads", kv_heads, "Synthetic model kv heads");
  app.add_option("--out", out_path, "JSON output file (default: stdout)");
  CLI11_PARSE(app, argc, argv);

  const auto bench_start = Clock::now();
  absl::StatusOr<int64_t> device_mem = ParseBytes(device_mem_text);
  if (!device_mem.ok()) Die(std::string(device_mem.status().message()));
  const std::optional<KvDtype> dtype = DtypeFrom(dtype_text);
  if (!dtype) Die("--kv-dtype must be f32, f16 or bf16, got '" + dtype_text + "'");
  bool run_resident = false, run_offloaded = false;
  for (const std::string& m : modes) {
    if (m == "resident") {
      run_resident = true;
    } else if (m == "offloaded") {
      run_offloaded = true;
    } else {
      Die("--modes takes resident and/or offloaded, got '" + m + "'");
    }
  }

  const int blas_default_threads = openblas_get_num_threads();
  if (blas_threads > 0) openblas_set_num_threads(blas_threads);
  headwise::runtime::ThreadPool pool(threads);
  headwise::model::testing::SyntheticModelSpec spec;
  spec.n_layers = layers;
  spec.n_embd = embd;
  spec.n_ff = embd * 3 / 2;
  spec.n_heads = heads;
  spec.n_kv_heads = kv_heads;
  spec.vocab = 256;
  spec.context_length = 1 << 21;
  spec.seed = 5;
  const std::vector<uint8_t> image = headwise::model::testing::BuildSyntheticModel(spec);
  auto file = headwise::model::GgufFile::FromBuffer(image.data(), image.size(), "synthetic.gguf");
  if (!file.ok()) Die(std::string(file.status().message()));
  auto loaded = LlamaModel::FromGguf(std::move(*file), &pool);
  if (!loaded.ok()) Die(std::string(loaded.status().message()));
  LlamaModel& model = **loaded;
  const auto geometry = model.KvGeometryFor(kBlockTokens, *dtype);

  Setup setup{&model, *dtype, steps, *device_mem, &pool};

  json report = {
      {"benchmark", "offload_bench"},
      {"machine", headwise::bench::MachineInfo()},
      {"load_average_start", LoadAverage()},
      {"cpu_busy_percent_before_start", CpuBusyPercent(1.0)},
      {"threads", pool.size()},
      {"blas_threads", openblas_get_num_threads()},
      {"blas_default_threads", blas_default_threads},
      {"model",
       {{"kind", "synthetic llama (runtime/model/synthetic_model.h)"},
        {"n_layers", spec.n_layers},
        {"n_embd", spec.n_embd},
        {"n_ff", spec.n_ff},
        {"n_heads", spec.n_heads},
        {"n_kv_heads", spec.n_kv_heads},
        {"head_dim", model.info().head_dim},
        {"vocab", spec.vocab}}},
      {"kv",
       {{"dtype", dtype_text},
        {"block_tokens", kBlockTokens},
        {"block_bytes", geometry.BlockBytes()},
        {"token_bytes", geometry.TokenBytes()}}},
      {"steps", steps},
      {"device_mem_bytes", *device_mem},
      {"fill",
       "KV filled with random K/V through KvStore::Append + Seal in 4096-token chunks (every "
       "layer per chunk, sealed as it goes), not by a real prefill: attention over it costs "
       "the same, while a real prefill of 1M tokens is quadratic and would take hours on this "
       "machine. One warm-up decode step, then --steps timed steps; medians reported."},
      {"definitions",
       {{"copy_seconds", "sim copy-engine busy time during the step (link-cap waits included)"},
        {"compute_seconds", "StreamStats.compute_seconds: partials over staged blocks + merge"},
        {"stream_wall_seconds", "StreamStats.wall_seconds: the whole streamed part, all layers"},
        {"overlap_stream", "median over steps of stream_wall / max(copy, compute)"},
        {"overlap_step", "median over steps of step_wall / max(copy, compute)"}}},
  };

  if (const double busy = report["cpu_busy_percent_before_start"].get<double>(); busy > 20) {
    std::fprintf(stderr,
                 "offload_bench: warning: the CPUs were %.0f%% busy before the start; copy and "
                 "compute share cores here, so the overlap figures will be pessimistic\n",
                 busy);
  }

  // The link rate: given, or the streamed compute rate measured uncapped.
  double link_gbps = 0;
  if (run_offloaded) {
    if (link_text == "auto") {
      std::fprintf(stderr, "calibrating the link at %lld tokens (uncapped link)...\n",
                   static_cast<long long>(calibrate_context));
      const json cal = RunOne(setup, calibrate_context, Mode::kOffloaded, 0.0, true);
      const double compute = cal["compute_seconds"].get<double>();
      const double bytes = cal["bytes_staged_per_step"].get<double>();
      if (compute <= 0 || bytes <= 0) Die("calibration streamed nothing; raise the context");
      link_gbps = std::round(bytes / compute / 1e9 * 100) / 100;
      report["link_choice"] = {
          {"how",
           "auto: bytes staged per step / streamed compute seconds per step, measured "
           "with an uncapped link at the calibration context, rounded to 0.01 GB/s"},
          {"calibrate_context", calibrate_context},
          {"uncapped_run", cal},
          {"link_gbps", link_gbps}};
    } else {
      if (!absl::SimpleAtod(link_text, &link_gbps) || !(link_gbps >= 0)) {
        Die("--link-gbps takes a rate in GB/s or 'auto', got '" + link_text + "'");
      }
      report["link_choice"] = {{"how", "given on the command line"}, {"link_gbps", link_gbps}};
    }
    std::fprintf(stderr, "link cap: %.2f GB/s\n", link_gbps);
  }
  report["link_gbps"] = link_gbps;

  for (int64_t context : contexts) {
    if (context < 1) Die("contexts must be positive");
    if (run_resident) report["runs"].push_back(RunOne(setup, context, Mode::kResident, 0, true));
    if (run_offloaded) {
      report["runs"].push_back(RunOne(setup, context, Mode::kOffloaded, link_gbps, true));
    }
  }

  // The ablation runs in a child process: OpenBLAS's thread behaviour is set
  // up when the library loads, and switching it back in-process does not
  // bring the spinning workers back the way a fresh process has them.
  if (run_offloaded && ablate_blas && blas_threads > 0 && blas_default_threads != blas_threads) {
    std::fprintf(stderr, "ablation: OpenBLAS at its default %d threads (child process)...\n",
                 blas_default_threads);
    char path[] = "/tmp/offload_bench_ablation_XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) Die("mkstemp failed");
    close(fd);
    const std::string command = absl::StrCat(
        "'/proc/", std::to_string(getpid()), "/exe' --contexts ", std::to_string(calibrate_context),
        " --steps ", std::to_string(steps), " --modes offloaded --link-gbps ",
        absl::StrFormat("%.4f", link_gbps), " --blas-threads 0 --ablate-blas false --device-mem ",
        std::to_string(*device_mem), " --kv-dtype ", dtype_text, " --threads ",
        std::to_string(threads), " --layers ", std::to_string(layers), " --embd ",
        std::to_string(embd), " --heads ", std::to_string(heads), " --kv-heads ",
        std::to_string(kv_heads), " --out ", std::string(path));
    if (std::system(command.c_str()) != 0) {
      std::remove(path);
      Die("the ablation run failed: " + command);
    }
    std::ifstream in(path);
    const json child = json::parse(in);
    std::remove(path);
    report["blas_ablation"] = {{"blas_threads", child["blas_threads"]},
                               {"command", "offload_bench --blas-threads 0 (a child process)"},
                               {"run", child["runs"][0]}};
  }

  // Verdicts of the milestone's done-when targets.
  json overlap = {{"context_tokens", 262144}, {"target", 1.1}, {"measured", nullptr}};
  bool peaks_ok = true;
  int64_t worst_peak = 0;
  json peak_rows = json::array();
  for (const json& r : report["runs"]) {
    if (r["mode"] != "offloaded") continue;
    const int64_t ctx = r["context_tokens"].get<int64_t>();
    if (ctx == 262144) {
      overlap["measured"] = r["overlap_stream"];
      overlap["step_over_bound"] = r["overlap_step"];
      overlap["fill_drain_model_ratio"] = r["fill_drain_model_ratio"];
      overlap["pass"] = !r["overlap_stream"].is_null() && r["overlap_stream"].get<double>() <= 1.1;
    }
    if (ctx >= 4096) {
      const int64_t peak = std::max(r["device_peak_bytes"].get<int64_t>(),
                                    r["device_arena_peak_bytes"].get<int64_t>());
      worst_peak = std::max(worst_peak, peak);
      peaks_ok = peaks_ok && r["device_within_budget"].get<bool>();
      peak_rows.push_back({{"context_tokens", ctx}, {"peak_bytes", peak}});
    }
  }
  if (report.contains("blas_ablation")) {
    overlap["with_blas_default_threads"] = report["blas_ablation"]["run"]["overlap_stream"];
  }
  report["verdicts"] = {{"stream_overlap_at_256k", overlap},
                        {"device_peak_within_budget_4k_to_1m",
                         {{"budget_bytes", *device_mem},
                          {"worst_peak_bytes", worst_peak},
                          {"per_context", peak_rows},
                          {"pass", peaks_ok && !peak_rows.empty()}}}};

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  report["max_rss_bytes"] = int64_t(usage.ru_maxrss) * 1024;
  report["load_average_end"] = LoadAverage();
  report["total_seconds"] = Since(bench_start);

  if (!headwise::bench::WriteReport(report, out_path)) {
    std::cerr << "cannot write " << out_path << "\n";
    return 1;
  }
  return 0;
}
