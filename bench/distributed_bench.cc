// Distributed KV decode benchmark, run under mpirun: rank 0 (the coordinator)
// runs a synthetic Llama-shaped model whose KV lives in a distributed
// KvStore (head-major placement: every rank holds 1/N of the (layer, kv head)
// pairs); the other ranks serve their pools with attention::MemoryRank.
// Per execution mode (pull: rank 0 reads remote blocks over the transport and
// computes; delegate: the memory ranks compute next to their memory) a fresh
// store is filled to --context tokens and decoded; reported: the median step,
// tokens/s, rank 0's StreamStats, every memory rank's MemoryRankStats and CPU
// time, transport traffic per peer, and the start-up probes. Two micro
// figures: one layer's Attend at decode (timed directly, so it is the
// delegate round trip plus rank 0's own share; also at a short context, where
// it is mostly the round trip), and pull throughput vs block size.
//
// The KV is filled with random K/V through KvStore::Append + Seal in 4096-token
// chunks, as bench/offload_bench.cc does: attention over it costs what it would
// after a real prefill, which at 256K tokens would take hours here.
//
// With --disk-dir the memory ranks get a disk tier (--disk-mem) behind small
// host pools (--pool), so most KV lives on their disks: delegate is then
// near-storage attention (InstInfer) and pull fetches disk blocks to rank 0
// (FlexGen). Each run adds disk bytes read per step and the rate achieved; at
// the end each memory rank, in turn, measures its disk read-only (see
// MeasureReadOnly) and sequentially (bench/run_disk.sh).
#include <mpi.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/machine_info.h"
#include "comm/mpi.h"
#include "comm/ucx_transport.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "runtime/attention/attend.h"
#include "runtime/attention/near_storage.h"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/kv/disk_pool.h"
#include "runtime/kv/kv_store.h"
#include "runtime/kv/storage_rank.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"

// OpenBLAS (linked as BLAS): one thread, or its spinning workers take the
// core a pinned rank owns.
extern "C" void openblas_set_num_threads(int threads);

namespace {

namespace hw = headwise;
using hw::attention::MemoryRankStats;
using hw::attention::StreamStats;
using hw::cluster::ExecMode;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int32_t kFillChunk = 4096;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

[[noreturn]] void Die(const std::string& message) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::cerr << "distributed_bench rank " << rank << ": " << message << std::endl;
  MPI_Abort(MPI_COMM_WORLD, 1);  // the other ranks would wait for this one forever
  std::exit(1);
}

void Check(const absl::Status& status, const std::string& where) {
  if (!status.ok()) Die(where + ": " + status.ToString());
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// CPU seconds every process on the machine has used so far (/proc/stat is
// not per network namespace): with our ranks' own CPU time it shows how much
// of the machine others took during a run (this VM is shared with builds).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  int64_t x = 0, busy = 0;
  in >> cpu;
  for (int i = 0; i < 8 && in >> x; ++i) {
    if (i != 3 && i != 4) busy += x;  // all but idle and iowait
  }
  return double(busy) / double(sysconf(_SC_CLK_TCK));
}

std::vector<double> LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  in >> a >> b >> c;
  return {a, b, c};
}

// What a memory rank reports after each run (gathered over MPI).
struct ServeReport {
  double process_cpu_seconds = 0;   // the whole run: fill (puts), decode, Attend steps
  double delegate_cpu_seconds = 0;  // thread CPU inside delegate calls
  double delegate_wall_seconds = 0;
  double delegate_calls = 0;
};
constexpr int kServeReportDoubles = 4;

// "512MiB", "1G", "4096" -> bytes; -1 when unreadable.
int64_t ParseBytes(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (...) {
    return -1;
  }
  const std::string unit = text.substr(used);
  double scale = -1;
  if (unit.empty() || unit == "B") scale = 1;
  if (unit == "K" || unit == "KiB") scale = 1024.0;
  if (unit == "M" || unit == "MiB") scale = 1024.0 * 1024;
  if (unit == "G" || unit == "GiB") scale = 1024.0 * 1024 * 1024;
  return scale < 0 || value < 0 ? -1 : static_cast<int64_t>(std::llround(value * scale));
}

// Uniform floats in [-1, 1) (xorshift64*): values do not change attention's cost.
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

// Waits for a non-blocking MPI operation, sleeping between tests: a blocking
// call would spin on a core the measured ranks need.
void Await(MPI_Request* request) {
  for (int done = 0; !done;) {
    MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// What rank 0 tells the memory ranks next: the benchmark is over, another
// run follows, or the read-only disk pass.
enum NextRun : int { kBenchmarkOver = 0, kAnotherRun = 1, kReadOnlyPass = 2 };

int ShareNextRun(int word) {
  MPI_Request request;
  MPI_Ibcast(&word, 1, MPI_INT, 0, MPI_COMM_WORLD, &request);
  Await(&request);
  return word;
}

// Point-to-point messages of the read-only pass (sizes travel first).
constexpr int kPassTag = 71;

void SendInt64s(const std::vector<int64_t>& values, int to) {
  int64_t n = static_cast<int64_t>(values.size());
  MPI_Request request;
  MPI_Isend(&n, 1, MPI_INT64_T, to, kPassTag, MPI_COMM_WORLD, &request);
  Await(&request);
  MPI_Isend(values.data(), static_cast<int>(n), MPI_INT64_T, to, kPassTag, MPI_COMM_WORLD,
            &request);
  Await(&request);
}

std::vector<int64_t> ReceiveInt64s(int from) {
  int64_t n = 0;
  MPI_Request request;
  MPI_Irecv(&n, 1, MPI_INT64_T, from, kPassTag, MPI_COMM_WORLD, &request);
  Await(&request);
  std::vector<int64_t> values(static_cast<size_t>(n));
  MPI_Irecv(values.data(), static_cast<int>(n), MPI_INT64_T, from, kPassTag, MPI_COMM_WORLD,
            &request);
  Await(&request);
  return values;
}

// A memory rank's disk measured with nothing else running (ReadOnlyPass).
struct ReadOnlyReport {
  double slots = 0;                 // disk slots the last main run used there
  double write_gbps = 0;            // writing them, ascending
  double stream_bytes = 0;          // read by the delegate-order passes
  double stream_seconds = 0;        // their wall time
  double sorted_stream_gbps = 0;    // the same slots streamed in ascending order
  double sequential_read_gbps = 0;  // kv::MeasureSequentialReadGbps(dir, 256 MiB)
};
constexpr int kReadOnlyDoubles = 6;

// The memory rank's own disk pool is private to attention::MemoryRank, so the
// bench makes a twin: a DiskPool in the same dir with the same block size and
// slot count, the slots the last main run used written in ascending order (as
// the tier's demotions took them), then `passes` times every layer's slots
// streamed in the order a delegate request reads them, through the runtime's
// read-ahead window with a consumer that does nothing (checksums are still
// verified, as in the real reads). `layers[l]` lists layer l's slots.
ReadOnlyReport MeasureReadOnly(const hw::kv::DiskTierOptions& disk, int rank, int passes,
                               int64_t block_bytes,
                               const std::vector<std::vector<int64_t>>& layers) {
  ReadOnlyReport report;
  std::vector<int64_t> all;
  for (const std::vector<int64_t>& slots : layers)
    all.insert(all.end(), slots.begin(), slots.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  report.slots = double(all.size());
  {
    hw::kv::DiskPoolOptions options;
    options.dir = disk.dir;
    options.capacity_bytes = disk.bytes;
    options.block_bytes = block_bytes;
    options.rank = rank;
    auto pool = hw::kv::DiskPool::Create(options);
    Check(pool.status(), "DiskPool::Create (read-only pass)");
    constexpr size_t kBatch = 64;
    std::vector<uint8_t> bytes(kBatch * size_t(block_bytes));
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 131 + 7);
    const Clock::time_point write_start = Clock::now();
    for (size_t at = 0; at < all.size(); at += kBatch) {
      const size_t n = std::min(kBatch, all.size() - at);
      std::vector<const void*> data;
      std::vector<hw::kv::BlockTag> tags(n);
      for (size_t i = 0; i < n; ++i) data.push_back(bytes.data() + i * size_t(block_bytes));
      Check((*pool)->WriteMany(std::span(all).subspan(at, n), data, tags), "read-only pass write");
    }
    const double write_seconds = Since(write_start);
    report.write_gbps =
        write_seconds > 0 ? double(all.size()) * block_bytes / write_seconds / 1e9 : 0;

    const auto nothing = [](size_t, size_t, const uint8_t*) { return absl::OkStatus(); };
    const Clock::time_point stream_start = Clock::now();
    for (int pass = 0; pass < passes; ++pass) {
      for (const std::vector<int64_t>& slots : layers) {
        Check((*pool)->Stream(slots, hw::attention::kDiskWindowBytes, nothing), "read-only pass");
        report.stream_bytes += double(slots.size()) * block_bytes;
      }
    }
    report.stream_seconds = Since(stream_start);
    const Clock::time_point sorted_start = Clock::now();
    for (int pass = 0; pass < passes; ++pass) {
      Check((*pool)->Stream(all, hw::attention::kDiskWindowBytes, nothing), "read-only pass");
    }
    const double sorted_seconds = Since(sorted_start);
    report.sorted_stream_gbps = sorted_seconds > 0 ? double(passes) * double(all.size()) *
                                                         block_bytes / sorted_seconds / 1e9
                                                   : 0;
  }  // the twin's files go before the sequential file is written
  absl::StatusOr<double> sequential =
      hw::kv::MeasureSequentialReadGbps(disk.dir, int64_t{256} << 20);
  Check(sequential.status(), "MeasureSequentialReadGbps");
  report.sequential_read_gbps = *sequential;
  return report;
}

// Memory rank side of the read-only pass: {block bytes, n layers, n layers
// slot counts, slots...} in, a ReadOnlyReport out.
void ServeReadOnlyPass(const hw::kv::DiskTierOptions& disk, int rank, int passes) {
  const std::vector<int64_t> message = ReceiveInt64s(0);
  const int64_t n_layers = message.at(1);
  std::vector<std::vector<int64_t>> layers(static_cast<size_t>(n_layers));
  size_t at = size_t(2 + n_layers);
  for (int64_t l = 0; l < n_layers; ++l) {
    const size_t n = static_cast<size_t>(message.at(size_t(2 + l)));
    layers[l].assign(message.begin() + long(at), message.begin() + long(at + n));
    at += n;
  }
  ReadOnlyReport report = MeasureReadOnly(disk, rank, passes, message.at(0), layers);
  static_assert(sizeof(ReadOnlyReport) == kReadOnlyDoubles * sizeof(double));
  MPI_Request request;
  MPI_Isend(&report, kReadOnlyDoubles, MPI_DOUBLE, 0, kPassTag, MPI_COMM_WORLD, &request);
  Await(&request);
}

// Where this rank runs: host, network namespace, allowed CPUs.
std::string RankPlace() {
  char host[128] = {};
  gethostname(host, sizeof(host) - 1);
  char ns[64] = {};
  const ssize_t n = readlink("/proc/self/ns/net", ns, sizeof(ns) - 1);
  if (n < 0) ns[0] = '?';
  cpu_set_t set;
  CPU_ZERO(&set);
  std::string cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) absl::StrAppend(&cpus, cpus.empty() ? "" : ",", c);
    }
  }
  return absl::StrCat(host, " ", ns, " cpus ", cpus, " pid ", getpid());
}

struct Flags {
  int64_t context = 262144;
  int steps = 8, pull_steps = 3, attend_steps = 3;
  std::vector<std::string> modes = {"pull", "delegate"};
  int layers = 2, heads = 8, kv_heads = 4, head_dim = 64;
  std::string dtype = "f16";
  int32_t block_tokens = 256;
  std::vector<int32_t> sweep_blocks = {64, 256, 1024};
  int64_t sweep_context = 65536;
  int sweep_steps = 2;
  int64_t rtt_context = 4096;
  int rtt_steps = 10;
  std::string pool = "auto";
  std::string disk_dir, disk_mem = "0", coordinator_host = "0";
  int read_only_passes = 2;
  int threads = 1;
  double peer_timeout_s = 120;
  std::string label, launch, out;
};

struct RunSpec {
  std::string purpose;
  ExecMode mode;
  int64_t context;
  int32_t block_tokens;
  int steps;         // timed Forward steps (after one warm-up step)
  int attend_steps;  // then steps of Attend on every layer, timed per layer
};

// Bytes the busiest memory rank holds for `spec` under head-major placement.
int64_t PoolNeed(const Flags& f, hw::kernels::KvDtype dtype, const RunSpec& spec, int world) {
  const int64_t pairs = (int64_t(f.layers) * f.kv_heads + world - 1) / world;
  const int64_t tokens = spec.context + spec.steps + spec.attend_steps + 2;
  const int64_t blocks = (tokens + spec.block_tokens - 1) / spec.block_tokens + 1;
  return pairs * blocks * 2 * spec.block_tokens * f.head_dim *
         static_cast<int64_t>(hw::kernels::KvDtypeSize(dtype));
}

class Coordinator {
 public:
  Coordinator(hw::kernels::KvDtype dtype, hw::model::LlamaModel& model, hw::device::Device& device,
              hw::comm::UcxTransport& transport)
      : dtype_(dtype), model_(model), device_(device), transport_(transport) {}

  // Rank 0's host budget (0: unlimited; past it its blocks spill to the
  // memory ranks) and the probed costs, whose disk budgets let the placement
  // put blocks on the memory ranks' disks.
  void Configure(int64_t host_budget_bytes, hw::cluster::CostModel costs) {
    host_budget_bytes_ = host_budget_bytes;
    costs_ = std::move(costs);
    for (const hw::cluster::RankProbe& rank : costs_.ranks) disk_ = disk_ || rank.disk_bytes > 0;
  }

  json Run(const RunSpec& spec) {
    const int world = transport_.size();
    if (world > 1) ShareNextRun(kAnotherRun);
    const auto& info = model_.info();
    hw::kv::KvStoreOptions options;
    options.geometry = model_.KvGeometryFor(spec.block_tokens, dtype_);
    options.device = &device_;
    options.capacity_tokens = spec.context + spec.steps + spec.attend_steps + 2;
    options.max_append_tokens = kFillChunk;
    options.host_budget_bytes = host_budget_bytes_;
    options.costs = costs_;
    if (world > 1) {
      options.transport = &transport_;
      options.placement = hw::cluster::PlacementPolicy::kHeadMajor;
      options.mode = spec.mode;
    }
    auto created = hw::kv::KvStore::Create(options);
    Check(created.status(), "KvStore::Create");
    hw::kv::KvStore& store = **created;
    const double busy_before = MachineBusySeconds(), cpu_before = ProcessCpuSeconds();
    const std::vector<double> load_before = LoadAverage();
    const Clock::time_point run_start = Clock::now();

    // Fill: random K/V in prefill-sized chunks, sealed (and sent home) as it goes.
    const int64_t row = int64_t(info.n_kv_heads) * info.head_dim;
    std::vector<float> k(size_t(kFillChunk * row)), v(k.size());
    Random random(static_cast<uint64_t>(spec.context + spec.block_tokens));
    const Clock::time_point fill_start = Clock::now();
    for (int64_t at = 0; at < spec.context; at += kFillChunk) {
      const int64_t rows = std::min<int64_t>(kFillChunk, spec.context - at);
      random.Fill(k);
      random.Fill(v);
      for (int32_t layer = 0; layer < int32_t(info.n_layers); ++layer) {
        Check(store.Append(layer, k.data(), v.data(), rows, row), "Append");
        Check(store.Seal(layer), "Seal");
      }
      // With a rank-0 budget, blocks in flight to other ranks count against
      // it until their puts finish and Append does not wait for them: wait here.
      if (host_budget_bytes_ > 0 && store.distributed()) {
        Check(store.AwaitRemoteHomes(), "AwaitRemoteHomes");
      }
    }
    if (store.distributed()) Check(store.AwaitRemoteHomes(), "AwaitRemoteHomes");
    const double fill_seconds = Since(fill_start);
    if (disk_ && spec.purpose == "main") disk_slots_ = DiskSlots(store);

    std::vector<float> logits;
    int32_t token = 17;
    StreamStats warm;  // page faults, scratch growth, first contact with every block
    Check(model_.Forward(std::span<const int32_t>(&token, 1), store, &logits, nullptr, &warm),
          "warm-up step");
    const std::vector<MemoryRankStats> m0 = Stats();
    const std::vector<hw::comm::PeerTraffic> t0 = Traffic();

    std::vector<double> step_s;
    StreamStats sum;
    for (int i = 0; i < spec.steps; ++i) {
      token = (token * 37 + 11) % int32_t(info.vocab_size);
      StreamStats stats;
      const Clock::time_point start = Clock::now();
      Check(model_.Forward(std::span<const int32_t>(&token, 1), store, &logits, nullptr, &stats),
            "decode step");
      step_s.push_back(Since(start));
      sum.delegate_calls += stats.delegate_calls;
      sum.pull_items += stats.pull_items;
      sum.bytes_pulled += stats.bytes_pulled;
      sum.remote_wait_seconds += stats.remote_wait_seconds;
      sum.wall_seconds += stats.wall_seconds;
      sum.compute_seconds += stats.compute_seconds;
      sum.copy_wait_seconds += stats.copy_wait_seconds;
      sum.disk_bytes_read += stats.disk_bytes_read;
      sum.bytes_fetched += stats.bytes_fetched;
      sum.disk_seconds += stats.disk_seconds;
    }
    const std::vector<MemoryRankStats> m1 = Stats();
    const std::vector<hw::comm::PeerTraffic> t1 = Traffic();

    // One layer's Attend at decode, timed on its own (no dense part).
    std::vector<double> layer_s, layer_wait_s;
    std::vector<float> q(size_t(info.n_heads) * info.head_dim), out(q.size());
    std::vector<float> k1(static_cast<size_t>(row)), v1(k1.size());
    for (int i = 0; i < spec.attend_steps; ++i) {
      for (int32_t layer = 0; layer < int32_t(info.n_layers); ++layer) {
        random.Fill(q), random.Fill(k1), random.Fill(v1);
        hw::attention::AttendArgs args{
            layer, 1, int32_t(info.n_heads), q.data(), k1.data(), v1.data(), out.data()};
        StreamStats stats;
        const Clock::time_point start = Clock::now();
        Check(hw::attention::Attend(store, args, &stats), "Attend");
        layer_s.push_back(Since(start));
        layer_wait_s.push_back(stats.remote_wait_seconds);
      }
    }
    const std::vector<ServeReport> served = EndRun();
    const double run_seconds = Since(run_start);
    double ours = ProcessCpuSeconds() - cpu_before;
    for (const ServeReport& r : served) ours += r.process_cpu_seconds;
    const double others = MachineBusySeconds() - busy_before - ours;

    const double step = Median(step_s);
    const double n = std::max(spec.steps, 1);
    double disk_read = 0;  // bytes per step, every memory rank's disk
    json ranks = json::array();
    for (int r = 0; r < world; ++r) {
      json entry = {{"rank", r},
                    {"kv_bytes_held", store.distributed() ? store.placement()->used_bytes(r)
                                                          : spec.context * TokenBytes(store)}};
      if (r > 0) {
        const double bytes = double(m1[r].kv_bytes_attended - m0[r].kv_bytes_attended);
        const double secs = m1[r].attention_seconds - m0[r].attention_seconds;
        entry["delegate_calls_per_step"] = double(m1[r].delegate_calls - m0[r].delegate_calls) / n;
        entry["attention_bytes_per_step"] = bytes / n;
        entry["attention_seconds_per_step"] = secs / n;
        entry["attention_gbps"] = secs > 0 ? bytes / secs / 1e9 : 0.0;
        entry["pool_bytes"] = m1[r].pool_bytes;
        entry["traffic_per_step"] = {
            {"bytes_sent", double(t1[r].bytes_sent - t0[r].bytes_sent) / n},
            {"bytes_received", double(t1[r].bytes_received - t0[r].bytes_received) / n},
            {"calls", double(t1[r].calls - t0[r].calls) / n}};
        entry["traffic_since_start"] = {{"bytes_sent", t1[r].bytes_sent},
                                        {"bytes_received", t1[r].bytes_received},
                                        {"calls", t1[r].calls}};
        entry["process_cpu_seconds_in_run"] = served[r].process_cpu_seconds;
        // Delegate calls of the whole run (warm-up, timed and Attend steps).
        const double calls = std::max(served[r].delegate_calls, 1.0);
        entry["delegate_cpu_seconds_per_call"] = served[r].delegate_cpu_seconds / calls;
        entry["delegate_wall_seconds_per_call"] = served[r].delegate_wall_seconds / calls;
        entry["attention_cpu_seconds_per_step"] =
            served[r].delegate_cpu_seconds / calls *
            double(m1[r].delegate_calls - m0[r].delegate_calls) / n;
      }
      if (disk_) {
        entry["kv_bytes_on_disk"] = store.placement()->used_bytes(r, hw::cluster::PoolTier::kDisk);
        if (r > 0) {
          const double read = double(m1[r].disk_bytes_read - m0[r].disk_bytes_read);
          const double secs = m1[r].disk_read_seconds - m0[r].disk_read_seconds;
          disk_read += read / n;
          entry["disk_bytes_read_per_step"] = read / n;
          entry["disk_read_seconds_per_step"] = secs / n;
          entry["disk_pool_read_gbps"] = secs > 0 ? read / secs / 1e9 : 0.0;
          entry["disk_bytes_written_in_run"] = m1[r].disk_bytes_written;
        }
      }
      ranks.push_back(entry);
    }
    const double layer = Median(layer_s), layer_wait = Median(layer_wait_s);
    std::vector<double> local_s;
    for (size_t i = 0; i < layer_s.size(); ++i) local_s.push_back(layer_s[i] - layer_wait_s[i]);
    json run = {
        {"purpose", spec.purpose},
        {"mode", world > 1 ? hw::cluster::ExecModeName(spec.mode) : "local (1 rank)"},
        {"ranks", world},
        {"context_tokens", spec.context},
        {"block_tokens", spec.block_tokens},
        {"block_bytes", store.geometry().BlockBytes()},
        {"kv_bytes", spec.context * TokenBytes(store)},
        {"fill_seconds", fill_seconds},
        {"steps", spec.steps},
        {"step_seconds", step},
        {"step_seconds_all", step_s},
        {"tokens_per_s", step > 0 ? 1.0 / step : 0.0},
        {"step_per_layer_seconds", step / double(info.n_layers)},
        {"rank0_stream_per_step",
         {{"delegate_calls", double(sum.delegate_calls) / n},
          {"pull_items", double(sum.pull_items) / n},
          {"bytes_pulled", double(sum.bytes_pulled) / n},
          {"remote_wait_seconds", sum.remote_wait_seconds / n},
          {"stream_wall_seconds", sum.wall_seconds / n},
          {"stream_compute_seconds", sum.compute_seconds / n},
          {"copy_wait_seconds", sum.copy_wait_seconds / n}}},
        {"pull_gbps_stream", sum.wall_seconds > 0 ? sum.bytes_pulled / sum.wall_seconds / 1e9 : 0},
        {"pull_gbps_step", step > 0 ? double(sum.bytes_pulled) / n / step / 1e9 : 0.0},
        {"attend_layer_seconds", spec.attend_steps > 0 ? json(layer) : json(nullptr)},
        {"attend_layer_remote_wait_seconds",
         spec.attend_steps > 0 ? json(layer_wait) : json(nullptr)},
        {"attend_layer_samples", layer_s.size()},
        {"rank0_attend_layer_local_seconds",
         spec.attend_steps > 0 ? json(Median(local_s)) : json(nullptr)},
        {"run_seconds", run_seconds},
        {"load_average_before", load_before},
        {"load_average_after", LoadAverage()},
        {"others_cpu_seconds", others},
        {"others_cpu_fraction", others / (run_seconds * std::thread::hardware_concurrency())},
        {"per_rank", ranks},
    };
    if (disk_) {
      int64_t on_disk = 0;
      for (int r = 0; r < world; ++r) {
        on_disk += store.placement()->used_bytes(r, hw::cluster::PoolTier::kDisk);
      }
      const double kv = double(spec.context * TokenBytes(store));
      run["disk"] = {{"kv_bytes_on_disk", on_disk},
                     {"fraction_of_kv_on_disk", kv > 0 ? double(on_disk) / kv : 0.0},
                     {"disk_bytes_read_per_step", disk_read},
                     {"achieved_read_gbps", step > 0 ? disk_read / step / 1e9 : 0.0},
                     {"rank0_bytes_fetched_per_step", double(sum.bytes_fetched) / n},
                     {"rank0_disk_seconds_per_step", sum.disk_seconds / n},
                     {"rank0_own_disk_bytes_read_per_step", double(sum.disk_bytes_read) / n}};
    }
    return run;
  }

  // After the runs: each memory rank in turn measures its disk read-only
  // over the disk slots of the last main run (MeasureReadOnly), then
  // sequentially. Returns the reports by rank (index 0 empty).
  std::vector<ReadOnlyReport> ReadOnlyPass() {
    const int world = transport_.size();
    std::vector<ReadOnlyReport> reports(world);
    if (world == 1 || !disk_) return reports;
    ShareNextRun(kReadOnlyPass);
    for (int r = 1; r < world; ++r) {
      const std::vector<std::vector<int64_t>>& layers = disk_slots_.at(r);
      std::vector<int64_t> message = {disk_block_bytes_, int64_t(layers.size())};
      for (const std::vector<int64_t>& slots : layers) message.push_back(int64_t(slots.size()));
      for (const std::vector<int64_t>& slots : layers) {
        message.insert(message.end(), slots.begin(), slots.end());
      }
      SendInt64s(message, r);
      MPI_Request request;
      MPI_Irecv(&reports[r], kReadOnlyDoubles, MPI_DOUBLE, r, kPassTag, MPI_COMM_WORLD, &request);
      Await(&request);
    }
    return reports;
  }

  // Ends the memory ranks' serving loop.
  void Finish() {
    if (transport_.size() > 1) ShareNextRun(kBenchmarkOver);
  }

  // Stops the memory ranks and gathers what each reports (see ServeRuns).
  std::vector<ServeReport> EndRun() {
    std::vector<ServeReport> all(transport_.size());
    if (transport_.size() == 1) return all;
    Check(hw::attention::StopMemoryRanks(transport_), "StopMemoryRanks");
    ServeReport mine;
    static_assert(sizeof(ServeReport) == kServeReportDoubles * sizeof(double));
    MPI_Gather(&mine, kServeReportDoubles, MPI_DOUBLE, all.data(), kServeReportDoubles, MPI_DOUBLE,
               0, MPI_COMM_WORLD);
    return all;
  }

 private:
  static int64_t TokenBytes(const hw::kv::KvStore& store) { return store.geometry().TokenBytes(); }

  // Per rank and layer, the disk slots of the sealed blocks in the order a
  // delegate request streams them (kv heads in order, each head's blocks).
  std::vector<std::vector<std::vector<int64_t>>> DiskSlots(const hw::kv::KvStore& store) {
    const hw::kv::KvGeometry& g = store.geometry();
    disk_block_bytes_ = g.BlockBytes();
    std::vector<std::vector<std::vector<int64_t>>> slots(
        transport_.size(), std::vector<std::vector<int64_t>>(size_t(g.n_layers)));
    for (int32_t layer = 0; layer < g.n_layers; ++layer) {
      for (int32_t head = 0; head < g.n_kv_heads; ++head) {
        for (int32_t b = 0; b < store.n_sealed(layer); ++b) {
          const hw::cluster::BlockHome home = store.Home(layer, head, b);
          if (home.tier == hw::cluster::PoolTier::kDisk) {
            slots[home.rank][layer].push_back(home.slot);
          }
        }
      }
    }
    return slots;
  }

  std::vector<MemoryRankStats> Stats() {
    if (transport_.size() == 1) return std::vector<MemoryRankStats>(1);
    auto stats = hw::attention::CollectMemoryRankStats(transport_);
    Check(stats.status(), "CollectMemoryRankStats");
    return *stats;
  }

  std::vector<hw::comm::PeerTraffic> Traffic() {
    std::vector<hw::comm::PeerTraffic> all(transport_.size());
    for (int r = 1; r < transport_.size(); ++r) all[r] = transport_.traffic(r);
    return all;
  }

  hw::kernels::KvDtype dtype_;
  hw::model::LlamaModel& model_;
  hw::device::Device& device_;
  hw::comm::UcxTransport& transport_;
  int64_t host_budget_bytes_ = 0;
  hw::cluster::CostModel costs_;
  bool disk_ = false;                                          // some memory rank has a disk tier
  std::vector<std::vector<std::vector<int64_t>>> disk_slots_;  // of the last main run
  int64_t disk_block_bytes_ = 0;
};

// Memory ranks: serve one run after another until rank 0 says it is over,
// through MemoryRank::Handle wrapped to time the delegate calls in thread CPU
// seconds (MemoryRankStats has wall seconds, which on an oversubscribed
// machine include waiting for a core); after each run, report to rank 0.
// Each run's memory rank makes a fresh disk tier in `disk` (if any) on first use.
int ServeRuns(hw::comm::UcxTransport& transport, hw::device::Device& device,
              const hw::kv::DiskTierOptions& disk, int read_only_passes) {
  for (int next; (next = ShareNextRun(kBenchmarkOver)) != kBenchmarkOver;) {
    if (next == kReadOnlyPass) {
      ServeReadOnlyPass(disk, transport.rank(), read_only_passes);
      continue;
    }
    ServeReport report;
    const double cpu = ProcessCpuSeconds();
    hw::attention::MemoryRank rank(transport, device, disk);
    absl::Status served = transport.Serve([&](std::span<const std::byte> request) {
      const int64_t calls = rank.stats().delegate_calls;
      const double thread_cpu = ThreadCpuSeconds();
      const Clock::time_point start = Clock::now();
      absl::StatusOr<hw::comm::CallReply> reply = rank.Handle(request);
      if (rank.stats().delegate_calls != calls) {
        report.delegate_calls += 1;
        report.delegate_cpu_seconds += ThreadCpuSeconds() - thread_cpu;
        report.delegate_wall_seconds += Since(start);
      }
      return reply;
    });
    if (!served.ok()) Die("Serve: " + served.ToString());
    report.process_cpu_seconds = ProcessCpuSeconds() - cpu;
    MPI_Gather(&report, kServeReportDoubles, MPI_DOUBLE, nullptr, kServeReportDoubles, MPI_DOUBLE,
               0, MPI_COMM_WORLD);
  }
  return 0;
}

// Adds the memory ranks' read-only figures (by rank; index 0 unused) to
// report["disk"] and, to each run with disk figures, its achieved read rate
// over their sums (the memory ranks' disks taken together).
void AddReadOnlyPass(const std::vector<ReadOnlyReport>& reports, json& report) {
  double sequential = 0, read_only = 0;
  for (size_t r = 1; r < reports.size(); ++r) {
    const ReadOnlyReport& x = reports[r];
    const double gbps = x.stream_seconds > 0 ? x.stream_bytes / x.stream_seconds / 1e9 : 0;
    report["disk"]["read_only"].push_back({{"rank", r},
                                           {"slots", x.slots},
                                           {"write_gbps", x.write_gbps},
                                           {"stream_bytes", x.stream_bytes},
                                           {"stream_seconds", x.stream_seconds},
                                           {"read_only_gbps", gbps},
                                           {"sorted_stream_gbps", x.sorted_stream_gbps},
                                           {"sequential_read_gbps", x.sequential_read_gbps}});
    sequential += x.sequential_read_gbps;
    read_only += gbps;
  }
  report["disk"]["sequential_read_gbps"] = sequential;
  report["disk"]["read_only_gbps"] = read_only;
  for (json& run : report["runs"]) {
    if (!run.contains("disk")) continue;
    const double achieved = run["disk"]["achieved_read_gbps"].get<double>();
    run["disk"]["achieved_over_sequential"] = sequential > 0 ? achieved / sequential : 0.0;
    run["disk"]["achieved_over_read_only"] = read_only > 0 ? achieved / read_only : 0.0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<hw::comm::MpiSession> session = hw::comm::MpiSession::Init(&argc, &argv);
  if (!session.ok()) {
    std::cerr << "MPI init failed: " << session.status() << "\n";
    return 2;
  }
  const int rank = session->rank(), world = session->size();
  std::string command;
  for (int i = 0; i < argc; ++i) absl::StrAppend(&command, i ? " " : "", argv[i]);

  Flags f;
  CLI::App app{"headwise distributed KV decode benchmark (run under mpirun)"};
  app.add_option("--context", f.context, "Context tokens of the main runs");
  app.add_option("--steps", f.steps, "Timed decode steps per delegate run (median reported)");
  app.add_option("--pull-steps", f.pull_steps, "Timed decode steps per pull run (slow links)");
  app.add_option("--attend-steps", f.attend_steps,
                 "Steps of per-layer Attend timing after the delegate run's decode");
  app.add_option("--modes", f.modes, "Execution modes: pull, delegate, auto")->delimiter(',');
  app.add_option("--layers", f.layers, "Synthetic model layers");
  app.add_option("--heads", f.heads, "Query heads");
  app.add_option("--kv-heads", f.kv_heads, "KV heads");
  app.add_option("--head-dim", f.head_dim, "Head dimension (n_embd = heads * head_dim)");
  app.add_option("--kv-dtype", f.dtype, "KV dtype: f32, f16 or bf16");
  app.add_option("--block-tokens", f.block_tokens, "KV block tokens of the main runs");
  app.add_option("--kv-block", f.sweep_blocks, "Pull-throughput sweep block sizes")->delimiter(',');
  app.add_option("--sweep-context", f.sweep_context,
                 "Context of the block-size sweep (0: skip it)");
  app.add_option("--sweep-steps", f.sweep_steps, "Timed pull steps per sweep point");
  app.add_option("--rtt-context", f.rtt_context,
                 "Short context for the per-layer round trip (0: skip)");
  app.add_option("--rtt-steps", f.rtt_steps, "Per-layer Attend steps at --rtt-context");
  app.add_option("--pool", f.pool, "Memory rank pool bytes (e.g. 512MiB), or auto");
  app.add_option("--disk-dir", f.disk_dir, "Memory ranks' disk tier directory (a real disk)");
  app.add_option("--disk-mem", f.disk_mem, "Memory ranks' disk tier bytes (with --disk-dir)");
  app.add_option("--coordinator-host", f.coordinator_host,
                 "Rank 0's host KV budget (0: unlimited); past it, its blocks spill to the "
                 "memory ranks");
  app.add_option("--read-only-passes", f.read_only_passes,
                 "Passes over the disk slots in the memory ranks' read-only measurement");
  app.add_option("--threads", f.threads, "Compute threads per rank (the caller included)");
  app.add_option("--peer-timeout", f.peer_timeout_s, "Seconds to wait for a peer");
  app.add_option("--label", f.label, "Free text stored in the report");
  app.add_option("--launch", f.launch, "The mpirun command line, stored in the report");
  app.add_option("--out", f.out, "JSON output file (default: stdout)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    if (e.get_exit_code() == 0) return 0;
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  const std::optional<hw::kernels::KvDtype> dtype = hw::kernels::ParseKvDtype(f.dtype);
  if (!dtype) Die("--kv-dtype must be f32, f16 or bf16");
  if (f.context < 1 || f.block_tokens < 1 || f.steps < 1 || f.pull_steps < 1 || f.threads < 1) {
    Die("--context, --block-tokens, --steps, --pull-steps and --threads must be positive");
  }
  std::vector<ExecMode> modes;
  for (const std::string& m : f.modes) {
    const std::optional<ExecMode> mode = hw::cluster::ParseExecMode(m);
    if (!mode) Die("--modes takes pull, delegate or auto, got '" + m + "'");
    modes.push_back(*mode);
  }

  // Every run, so every rank can size its pool the same way.
  std::vector<RunSpec> specs;
  for (ExecMode mode : modes) {
    const bool pull = mode == ExecMode::kPull;
    specs.push_back({"main", mode, f.context, f.block_tokens, pull ? f.pull_steps : f.steps,
                     pull ? 0 : f.attend_steps});
  }
  if (f.rtt_context > 0) {
    for (ExecMode mode : modes) specs.push_back({"rtt", mode, f.rtt_context, 256, 1, f.rtt_steps});
  }
  if (world > 1 && f.sweep_context > 0) {
    for (int32_t block : f.sweep_blocks) {
      if (block < 1) Die("--kv-block sizes must be positive");
      specs.push_back({"pull_sweep", ExecMode::kPull, f.sweep_context, block, f.sweep_steps, 0});
    }
  }
  const int64_t disk_mem = ParseBytes(f.disk_mem);
  const int64_t coordinator_host = ParseBytes(f.coordinator_host);
  if (disk_mem < 0 || coordinator_host < 0) Die("bad --disk-mem or --coordinator-host");
  if (f.disk_dir.empty() != (disk_mem == 0) || (disk_mem > 0 && world < 2)) {
    Die("--disk-dir and --disk-mem go together, with memory ranks (2 or more ranks)");
  }
  int64_t pool = 0;
  for (const RunSpec& s : specs) pool = std::max(pool, PoolNeed(f, *dtype, s, world));
  if (f.pool != "auto" && (pool = ParseBytes(f.pool)) <= 0) Die("bad --pool '" + f.pool + "'");

  openblas_set_num_threads(1);
  hw::runtime::ThreadPool threads(f.threads);
  std::unique_ptr<hw::device::Device> cpu = hw::device::MakeCpuDevice(&threads);
  hw::comm::UcxTransportOptions options;
  options.pool_bytes = rank == 0 ? 0 : pool;
  options.peer_timeout = absl::Seconds(f.peer_timeout_s);
  auto transport = hw::comm::UcxTransport::Create(MPI_COMM_WORLD, options);
  Check(transport.status(), "UcxTransport::Create");

  char place[256] = {};
  const std::string mine = RankPlace();
  mine.copy(place, sizeof(place) - 1);
  std::vector<char> places(rank == 0 ? sizeof(place) * world : 0);
  MPI_Gather(place, sizeof(place), MPI_CHAR, places.data(), sizeof(place), MPI_CHAR, 0,
             MPI_COMM_WORLD);
  const hw::kv::DiskTierOptions disk{f.disk_dir, disk_mem};
  if (rank != 0) return ServeRuns(**transport, *cpu, disk, std::max(f.read_only_passes, 1));

  const Clock::time_point bench_start = Clock::now();
  hw::model::testing::SyntheticModelSpec spec;
  spec.n_layers = f.layers;
  spec.n_heads = f.heads;
  spec.n_kv_heads = f.kv_heads;
  spec.n_embd = int64_t(f.heads) * f.head_dim;
  spec.n_ff = spec.n_embd * 3 / 2;
  spec.vocab = 256;
  spec.context_length = 1 << 22;
  spec.seed = 5;
  const std::vector<uint8_t> image = hw::model::testing::BuildSyntheticModel(spec);
  auto file = hw::model::GgufFile::FromBuffer(image.data(), image.size(), "synthetic.gguf");
  Check(file.status(), "synthetic model");
  auto model = hw::model::LlamaModel::FromGguf(std::move(*file), &threads);
  Check(model.status(), "synthetic model");

  json ranks = json::array();
  for (int r = 0; r < world; ++r) {
    ranks.push_back({{"rank", r},
                     {"place", std::string(places.data() + r * sizeof(place))},
                     {"pool_bytes", (*transport)->peers()[r].pool_bytes}});
  }
  auto env = [](const char* name) { return std::getenv(name) ? std::getenv(name) : ""; };
  json report = {
      {"benchmark", "distributed_bench"},
      {"label", f.label},
      {"machine", hw::bench::MachineInfo()},
      {"command", command},
      {"launch", f.launch},
      {"env", {{"UCX_TLS", env("UCX_TLS")}, {"UCX_NET_DEVICES", env("UCX_NET_DEVICES")}}},
      {"world", world},
      {"ranks", ranks},
      {"threads_per_rank", threads.size()},
      {"ucx_error_mode",
       (*transport)->error_mode() == hw::comm::UcxTransportOptions::ErrorMode::kPeer ? "peer"
                                                                                     : "none"},
      {"model",
       {{"kind", "synthetic llama (runtime/model/synthetic_model.h)"},
        {"n_layers", f.layers},
        {"n_heads", f.heads},
        {"n_kv_heads", f.kv_heads},
        {"head_dim", f.head_dim},
        {"n_embd", spec.n_embd},
        {"kv_dtype", f.dtype},
        {"placement", "head-major"}}},
      {"fill",
       "random K/V via KvStore::Append + Seal in 4096-token chunks (not a real prefill); one "
       "warm-up decode step, then timed steps; medians reported"},
      {"definitions",
       {{"attend_layer_seconds",
         "median wall of one attention::Attend call (one layer, one new token) after the decode "
         "steps: rank 0's own partial, the delegate round trip (or the pulls) and the merge"},
        {"step_per_layer_seconds", "median decode step / layers (dense part included)"},
        {"pull_gbps_stream", "bytes_pulled / StreamStats.wall_seconds (the pulled pipeline)"},
        {"per_rank.attention_*", "MemoryRankStats deltas over the timed decode steps, per step"}}},
  };
  if (disk_mem > 0) {
    report["disk"] = {{"dir", f.disk_dir},
                      {"memory_rank_disk_bytes", disk_mem},
                      {"memory_rank_pool_bytes", pool},
                      {"coordinator_host_bytes", coordinator_host}};
    report["definitions"]["runs.disk.achieved_read_gbps"] =
        "disk bytes every memory rank read per decode step (MemoryRankStats deltas) / median step";
    report["definitions"]["per_rank.disk_pool_read_gbps"] =
        "MemoryRankStats disk_bytes_read / disk_read_seconds over the timed steps (the pool's "
        "own timing of its reads; see kv::DiskStats for whether it includes the consumer)";
    report["definitions"]["disk.read_only"] =
        "per memory rank, after the runs: a twin DiskPool made by the bench (same dir, block size "
        "and slot count as its disk tier; the tier itself is private to attention::MemoryRank), "
        "the last main run's disk slots written ascending, then streamed per layer in delegate "
        "order through the runtime's read-ahead window with a no-op consumer (checksums "
        "verified); sequential_read_gbps: kv::MeasureSequentialReadGbps(dir, 256 MiB) there";
  }
  Coordinator coordinator(*dtype, **model, *cpu, **transport);
  if (world > 1) ShareNextRun(kAnotherRun);
  absl::StatusOr<hw::cluster::CostModel> probes = hw::attention::ProbeCluster(**transport);
  Check(probes.status(), "ProbeCluster");
  coordinator.EndRun();
  for (size_t r = 0; r < probes->ranks.size(); ++r) {
    report["probes"].push_back({{"rank", r},
                                {"link_gbps", probes->ranks[r].link_gbps},
                                {"rtt_seconds", probes->ranks[r].rtt_seconds},
                                {"attention_gbps", probes->ranks[r].attention_gbps},
                                {"disk_bytes", probes->ranks[r].disk_bytes},
                                {"disk_read_gbps", probes->ranks[r].disk_read_gbps}});
  }
  coordinator.Configure(coordinator_host, *probes);
  report["triad_gbps_1thread"] = hw::bench::TriadGBps(size_t{64} << 20, 1, 3);

  for (const RunSpec& s : specs) {
    std::fprintf(stderr, "distributed_bench: %d ranks, %s %s, %lld tokens, block %d...\n", world,
                 s.purpose.c_str(), hw::cluster::ExecModeName(s.mode),
                 static_cast<long long>(s.context), s.block_tokens);
    json run = coordinator.Run(s);
    std::fprintf(stderr, "  step %.4f s (%.2f tok/s), layer Attend %s s, pulled %.0f B/step\n",
                 run["step_seconds"].get<double>(), run["tokens_per_s"].get<double>(),
                 run["attend_layer_seconds"].dump().c_str(),
                 run["rank0_stream_per_step"]["bytes_pulled"].get<double>());
    if (run.contains("disk")) {
      std::fprintf(stderr, "  disk: %.0f%% of the KV, %.0f B read/step, %.3f GB/s achieved\n",
                   100 * run["disk"]["fraction_of_kv_on_disk"].get<double>(),
                   run["disk"]["disk_bytes_read_per_step"].get<double>(),
                   run["disk"]["achieved_read_gbps"].get<double>());
    }
    report["runs"].push_back(run);
  }
  if (disk_mem > 0) AddReadOnlyPass(coordinator.ReadOnlyPass(), report);
  coordinator.Finish();
  report["total_seconds"] = Since(bench_start);
  if (!hw::bench::WriteReport(report, f.out)) Die("cannot write " + f.out);
  return 0;
}
