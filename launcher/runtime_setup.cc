#include "launcher/runtime_setup.h"

#include <iostream>

#include "cluster/world.h"
#include "launcher/options.h"

namespace headwise::launcher {

void AddPolicyOptions(CLI::App& cmd, PolicyFlags& flags) {
  cmd.add_option(
         "--policy", flags.policy,
         "Attention policy of decode steps: exact; hybrid (HGCA: sinks + recent window "
         "densely, the best-scoring other blocks up to --hybrid-budget); quantkv "
         "(HCAttention: int4/int2 keys score every token, the tokens covering --quantkv-tau "
         "of the attention are attended exactly, eviction past --kv-budget). The last two "
         "are approximate and named in every result's stats")
      ->capture_default_str()
      ->each([&flags](const std::string&) { flags.given = true; });
  cmd.add_option("--hybrid-budget", flags.hybrid_budget,
                 "hybrid: fraction of the sequence's tokens each decode step attends, (0, 1]")
      ->capture_default_str();
  cmd.add_option("--hybrid-summary", flags.hybrid_summary,
                 "hybrid: what ranks the blocks: keys (approximate attention from the "
                 "--quantkv-bits quantized keys kept on rank 0) or bounds (per-channel key "
                 "min/max, Quest's: smaller and faster, less faithful)")
      ->capture_default_str();
  cmd.add_flag("--hybrid-pool-heads", flags.hybrid_pool_heads,
               "hybrid (keys): a layer's kv heads share their budgets — the best blocks of "
               "any head until the heads' budgets together are spent (HGCA's per-head "
               "sparsity)");
  cmd.add_option("--hybrid-token-top-k", flags.hybrid_token_top_k,
                 "hybrid: inside each block chosen by its summary only its k best tokens, "
                 "scored where the block lives (0: whole blocks)")
      ->capture_default_str();
  cmd.add_option("--kv-budget", flags.kv_budget,
                 "quantkv: fraction of the sequence's tokens kept; past it the least attended "
                 "are evicted (never sinks or window), (0, 1]")
      ->capture_default_str();
  cmd.add_option("--quantkv-tau", flags.quantkv_tau,
                 "quantkv: approximate attention mass each decode step attends, (0, 1]")
      ->capture_default_str();
  cmd.add_option("--quantkv-top-k", flags.quantkv_top_k,
                 "quantkv: at most this many selected tokens per kv head and step (0: no cap)")
      ->capture_default_str();
  cmd.add_option("--quantkv-bits", flags.quantkv_bits,
                 "quantkv and hybrid's keys summary: key bits, 4 or 2")
      ->capture_default_str();
  cmd.add_option("--window-tokens,--hybrid-window", flags.window_tokens,
                 "hybrid, quantkv: the most recent tokens always attended")
      ->capture_default_str();
  cmd.add_option("--sink-tokens,--hybrid-sinks", flags.sink_tokens,
                 "hybrid, quantkv: the first tokens always attended (attention sinks)")
      ->capture_default_str();
}

void AddRuntimeOptions(CLI::App& cmd, RuntimeFlags& flags) {
  AddModelOption(cmd, flags.model);
  cmd.add_option("--threads", flags.threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd.add_option("--kv-block", flags.kv_block, "Tokens per KV block")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd.add_option("--kv-dtype", flags.kv_dtype, "KV cache dtype: f32, f16 or bf16")
      ->capture_default_str();
  cmd.add_option("--prefill-chunk", flags.prefill_chunk, "Prompt tokens per prefill step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd.add_option("--device", flags.device,
                 "Compute device: cpu, sim or cuda (attention and KV on the GPU)")
      ->capture_default_str();
  cmd.add_option("--device-mem", flags.device_mem,
                 "Device memory for KV (e.g. 64MiB; 0: unlimited on cpu, required for sim and "
                 "cuda)")
      ->capture_default_str();
  cmd.add_option("--host-mem", flags.host_mem,
                 "Host KV pool of each rank (0: unlimited in one process; 4 GiB per memory rank "
                 "under mpirun)")
      ->capture_default_str();
  cmd.add_option("--disk-dir", flags.disk_dir,
                 "Directory on a local SSD for each rank's disk KV tier (blocks past --host-mem "
                 "spill there; attention on them runs on the rank that stores them)");
  cmd.add_option("--disk-mem", flags.disk_mem,
                 "Disk KV tier of each rank, preallocated in --disk-dir (0: none; 8GiB when only "
                 "--disk-dir is given)")
      ->capture_default_str();
  cmd.add_option("--sim-link-gbps", flags.sim_link_gbps,
                 "sim device host<->device link cap in GB/s (0: memcpy speed)")
      ->capture_default_str();
  cmd.add_option("--placement", flags.placement,
                 "Where sealed KV blocks live across ranks: head-major or striped")
      ->capture_default_str();
  cmd.add_option("--mode", flags.mode,
                 "Remote partials: auto (cost model), pull (read KV here) or delegate (compute "
                 "where the KV is)")
      ->capture_default_str();
  AddPolicyOptions(cmd, flags.attention);
  cmd.add_option("--peer-timeout", flags.peer_timeout,
                 "Seconds a rank may stay silent before its requests fail UNAVAILABLE")
      ->capture_default_str();
}

int Fail(std::string_view command, const absl::Status& status) {
  std::cerr << "headwise " << command << ": ";
  if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) {
    std::cerr << absl::StatusCodeToString(status.code()) << ": ";
  }
  std::cerr << status.message() << "\n";
  return 1;
}

absl::StatusOr<kv::AttentionPolicy> PolicyFromFlags(const PolicyFlags& flags) {
  std::optional<kv::AttentionPolicy::Kind> kind = kv::ParsePolicyKind(flags.policy);
  if (!kind) {
    return absl::InvalidArgumentError("--policy must be exact, hybrid or quantkv, got '" +
                                      flags.policy + "'");
  }
  kv::AttentionPolicy policy;
  policy.kind = *kind;
  policy.sink_tokens = flags.sink_tokens;
  policy.window_tokens = flags.window_tokens;
  policy.budget =
      *kind == kv::AttentionPolicy::Kind::kQuantKv ? flags.kv_budget : flags.hybrid_budget;
  std::optional<kv::AttentionPolicy::BlockSummary> summary =
      kv::ParseBlockSummary(flags.hybrid_summary);
  if (!summary) {
    return absl::InvalidArgumentError("--hybrid-summary must be keys or bounds, got '" +
                                      flags.hybrid_summary + "'");
  }
  policy.summary = *summary;
  policy.pool_heads = flags.hybrid_pool_heads;
  policy.token_top_k = flags.hybrid_token_top_k;
  policy.tau = flags.quantkv_tau;
  policy.top_k = flags.quantkv_top_k;
  policy.key_bits = flags.quantkv_bits;
  if (absl::Status s = policy.Validate(); !s.ok()) return s;
  return policy;
}

absl::StatusOr<Runtime> StartRuntime(const RuntimeFlags& flags, std::string_view command) {
  std::optional<kernels::KvDtype> kv_dtype = kernels::ParseKvDtype(flags.kv_dtype);
  if (!kv_dtype) {
    return absl::InvalidArgumentError("--kv-dtype must be f32, f16 or bf16, got '" +
                                      flags.kv_dtype + "'");
  }
  absl::StatusOr<uint64_t> device_mem = ParseBytes(flags.device_mem);
  if (!device_mem.ok()) return device_mem.status();
  absl::StatusOr<uint64_t> host_mem = ParseBytes(flags.host_mem);
  if (!host_mem.ok()) return host_mem.status();
  absl::StatusOr<uint64_t> disk_mem = ParseBytes(flags.disk_mem);
  if (!disk_mem.ok()) return disk_mem.status();
  kv::DiskTierOptions disk{flags.disk_dir, static_cast<int64_t>(*disk_mem)};
  if (!disk.dir.empty() && disk.bytes == 0) disk.bytes = kDefaultDiskBytes;
  if (disk.dir.empty() && disk.bytes > 0) {
    return absl::InvalidArgumentError("--disk-mem needs --disk-dir (where the disk tier lives)");
  }
  std::optional<cluster::PlacementPolicy> placement = cluster::ParsePlacement(flags.placement);
  if (!placement) {
    return absl::InvalidArgumentError("--placement must be head-major or striped, got '" +
                                      flags.placement + "'");
  }
  std::optional<cluster::ExecMode> mode = cluster::ParseExecMode(flags.mode);
  if (!mode) {
    return absl::InvalidArgumentError("--mode must be auto, pull or delegate, got '" + flags.mode +
                                      "'");
  }
  absl::StatusOr<kv::AttentionPolicy> policy = PolicyFromFlags(flags.attention);
  if (!policy.ok()) return policy.status();
  if (!(flags.peer_timeout > 0)) {
    return absl::InvalidArgumentError("--peer-timeout must be > 0 seconds");
  }
  if (flags.device != "cpu" && flags.device != "sim" && flags.device != "cuda") {
    return absl::InvalidArgumentError("--device must be cpu, sim or cuda, got '" + flags.device +
                                      "'");
  }
  if (flags.device != "cpu" && *device_mem == 0) {
    return absl::InvalidArgumentError("--device " + flags.device +
                                      " needs --device-mem (its KV budget)");
  }

  Runtime rt;
  // Under mpirun/srun every rank joins; memory ranks serve until rank 0 is done.
  if (const cluster::LaunchInfo launch = cluster::DetectLaunch(); launch.is_distributed()) {
    absl::StatusOr<std::unique_ptr<ClusterSession>> started = ClusterSession::Start(
        launch, static_cast<int64_t>(*host_mem), absl::Seconds(flags.peer_timeout), disk);
    if (!started.ok()) return started.status();
    rt.cluster = std::move(*started);
    if (rt.memory_rank()) return rt;
  }
  // A coordinator that fails from here on ends the whole job: memory ranks
  // would otherwise wait for a stop that never comes.
  auto fail = [&](absl::Status status) {
    if (rt.cluster != nullptr) rt.AbortCluster(Fail(command, status));
    return status;
  };
  rt.pool = std::make_unique<runtime::ThreadPool>(flags.threads);
  if (flags.device == "cpu") {
    rt.device = device::MakeCpuDevice(rt.pool.get());
  } else if (flags.device == "sim") {
    absl::StatusOr<std::unique_ptr<device::Device>> sim = device::MakeSimDevice(
        {static_cast<int64_t>(*device_mem), flags.sim_link_gbps}, rt.pool.get());
    if (!sim.ok()) return fail(sim.status());
    rt.device = std::move(*sim);
  } else {
    absl::StatusOr<std::unique_ptr<device::Device>> cuda =
        device::MakeCudaDevice({static_cast<int64_t>(*device_mem), 0});
    if (!cuda.ok()) return fail(cuda.status());
    rt.device = std::move(*cuda);
  }
  engine::GenerateOptions& base = rt.base;
  base.prefill_chunk = flags.prefill_chunk;
  base.kv_block = flags.kv_block;
  base.kv_dtype = *kv_dtype;
  base.device = rt.device.get();
  base.device_budget_bytes = static_cast<int64_t>(*device_mem);
  base.host_budget_bytes = static_cast<int64_t>(*host_mem);
  base.disk = disk;
  base.policy = *policy;
  if (rt.cluster != nullptr) {
    base.transport = &rt.cluster->transport();
    base.placement = *placement;
    base.mode = *mode;
    base.costs = rt.cluster->costs();
  }
  return rt;
}

}  // namespace headwise::launcher
