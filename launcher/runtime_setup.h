// What `generate` and `serve` share: the flags that shape the runtime (model,
// device and budgets, KV layout, distribution) and their start-up — parse
// and check the flags, join the cluster under mpirun/srun, make the thread
// pool and the device, and fill the engine's base options.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "launcher/cluster_session.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/engine/generator.h"

namespace headwise::launcher {

// A rank's disk tier when --disk-dir is given without --disk-mem.
inline constexpr int64_t kDefaultDiskBytes = int64_t{8} << 30;

// The attention policy flags (--policy and its knobs), shared by the
// commands that run the model and the clients that ask a server.
struct PolicyFlags {
  std::string policy = "exact";
  double hybrid_budget = 0.25;
  std::string hybrid_summary = "keys";
  bool hybrid_pool_heads = false;
  int32_t hybrid_token_top_k = 0;
  double kv_budget = 0.25;
  double quantkv_tau = 0.9;
  int32_t quantkv_top_k = 0;
  int32_t quantkv_bits = 4;
  int32_t window_tokens = 512;
  int32_t sink_tokens = 4;
  bool given = false;  // --policy was on the command line (or in the environment)
};
void AddPolicyOptions(CLI::App& cmd, PolicyFlags& flags);
// The attention policy the flags name (InvalidArgument naming a bad one).
absl::StatusOr<kv::AttentionPolicy> PolicyFromFlags(const PolicyFlags& flags);

struct RuntimeFlags {
  std::string model;
  int32_t threads = 0;
  int32_t kv_block = 256;
  std::string kv_dtype = "f32";
  int32_t prefill_chunk = 4096;
  std::string device = "cpu";
  std::string device_mem = "0";
  std::string host_mem = "0";
  std::string disk_dir;
  std::string disk_mem = "0";
  double sim_link_gbps = 0;
  std::string placement = "head-major";
  std::string mode = "auto";
  double peer_timeout = 10;
  PolicyFlags attention;
};

// Adds -m/--model and the options above (environment twins come from
// AddEnvTwins, called by the subcommand after all its options).
void AddRuntimeOptions(CLI::App& cmd, RuntimeFlags& flags);

// One line on stderr: "headwise <command>: [CODE: ]message"; the code is
// named for peer failures (UNAVAILABLE, DEADLINE_EXCEEDED). Returns 1.
int Fail(std::string_view command, const absl::Status& status);

struct Runtime {
  // Set under mpirun/srun. On a memory rank only this is set: the caller
  // serves (cluster->ServeMemoryRank) and returns.
  std::unique_ptr<ClusterSession> cluster;
  std::unique_ptr<runtime::ThreadPool> pool;
  std::unique_ptr<device::Device> device;
  engine::GenerateOptions base;  // device, budgets, KV layout, distribution

  bool memory_rank() const { return cluster != nullptr && !cluster->coordinator(); }
  // Ends a distributed job on the coordinator's failure (no-op otherwise).
  void AbortCluster(int code) {
    if (cluster != nullptr) cluster->Abort(code);
  }
  // Fail, then AbortCluster: once the cluster started, a coordinator's
  // failure ends the whole job (memory ranks would otherwise wait for a stop
  // that never comes).
  int FailJob(std::string_view command, const absl::Status& status) {
    const int code = Fail(command, status);
    AbortCluster(code);
    return code;
  }
};

// INVALID_ARGUMENT for bad flags (before anything starts); errors of MPI,
// UCX or the device otherwise (a coordinator failing after the cluster
// started reports it as `command` and aborts the job).
absl::StatusOr<Runtime> StartRuntime(const RuntimeFlags& flags, std::string_view command);

}  // namespace headwise::launcher
