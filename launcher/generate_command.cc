// `headwise generate`: one prompt, generated under --policy (exact unless told), streamed
// to stdout; throughput to stderr; optional stats JSON. Under mpirun/srun
// (more than one rank) rank 0 generates with its KV spread over every rank's
// pool and the other ranks serve as memory ranks until it is done.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cluster/world.h"
#include "launcher/client.h"
#include "launcher/cluster_session.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "launcher/runtime_setup.h"
#include "nlohmann/json.hpp"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/engine/generator.h"
#include "runtime/model/chat_template.h"
#include "runtime/model/llama.h"
#include "runtime/model/tokenizer.h"

namespace headwise::launcher {
namespace {

struct GenerateFlags {
  RuntimeFlags runtime;
  std::string prompt;
  std::string prompt_file;
  std::string system;
  int32_t n = 128;
  bool chat = false;
  float temp = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  std::string stats_json;
  std::string dump_logits;
  Connection remote;  // client mode (--server): ask this headwise server instead
};

int Fail(const absl::Status& status) { return launcher::Fail("generate", status); }

nlohmann::json TierJson(const kv::TierStats& tier) {
  return {{"used_bytes", tier.used_bytes},
          {"peak_bytes", tier.peak_bytes},
          {"budget_bytes", tier.budget_bytes}};
}

nlohmann::json DiskJson(const kv::TierStats& tier, int64_t bytes_read, double read_seconds) {
  nlohmann::json json = TierJson(tier);
  json["bytes_read"] = bytes_read;
  json["read_gbps"] = read_seconds > 0 ? bytes_read / read_seconds / 1e9 : 0.0;
  return json;
}

// Every rank's line of the stats: tiers, and bytes sent/received as the
// coordinator counted them (it initiates every transfer).
nlohmann::json RankStats(const engine::GenerateResult& result, ClusterSession* cluster,
                         const std::vector<attention::MemoryRankStats>& memory) {
  const cluster::LaunchInfo launch = cluster::DetectLaunch();
  nlohmann::json rank0 = {
      {"rank", 0},
      {"role", "coordinator"},
      {"hostname", launch.hostname},
      {"tiers", {{"device", TierJson(result.device_tier)}, {"host", TierJson(result.host_tier)}}},
      {"bytes_to_device", result.copies.bytes_to_device},
      {"bytes_to_host", result.copies.bytes_to_host},
      {"bytes_sent", 0},
      {"bytes_received", 0}};
  if (!result.rank_disks.empty() && result.rank_disks[0].budget_bytes > 0) {
    rank0["tiers"]["disk"] = DiskJson(result.rank_disks[0], result.stream.disk_bytes_read,
                                      result.stream.disk_read_seconds);
  }
  nlohmann::json ranks = nlohmann::json::array({rank0});
  if (cluster == nullptr) return ranks;
  comm::KvTransport& transport = cluster->transport();
  int64_t sent = 0, received = 0;
  for (int r = 1; r < transport.size(); ++r) {
    const comm::PeerTraffic traffic = transport.traffic(r);
    sent += traffic.bytes_sent;
    received += traffic.bytes_received;
    const kv::TierStats pool = r < static_cast<int>(result.rank_pools.size())
                                   ? result.rank_pools[r]
                                   : kv::TierStats{0, 0, transport.peers()[r].pool_bytes};
    const attention::MemoryRankStats& m = memory[r];
    nlohmann::json tiers = {{"host", TierJson(pool)}};
    if (m.disk_bytes > 0) {
      const kv::TierStats disk = r < static_cast<int>(result.rank_disks.size())
                                     ? result.rank_disks[r]
                                     : kv::TierStats{0, 0, m.disk_bytes};
      tiers["disk"] = DiskJson(disk, m.disk_bytes_read, m.disk_read_seconds);
    }
    ranks.push_back({{"rank", r},
                     {"role", "memory"},
                     {"hostname", transport.peers()[r].hostname},
                     {"tiers", tiers},
                     {"bytes_sent", traffic.bytes_received},
                     {"bytes_received", traffic.bytes_sent},
                     {"calls", traffic.calls},
                     {"delegate_calls", m.delegate_calls},
                     {"attention_bytes", m.kv_bytes_attended},
                     {"attention_seconds", m.attention_seconds}});
  }
  ranks[0]["bytes_sent"] = sent;
  ranks[0]["bytes_received"] = received;
  return ranks;
}

absl::Status WriteStats(const std::string& path, const GenerateFlags& flags,
                        const model::LlamaModel& llm, const engine::GenerateResult& result,
                        ClusterSession* cluster,
                        const std::vector<attention::MemoryRankStats>& memory) {
  nlohmann::json stats = {
      {"model", flags.runtime.model},
      {"architecture", llm.info().architecture},
      {"prompt_tokens", result.prompt_token_ids.size()},
      {"prompt_token_ids", result.prompt_token_ids},
      {"generated_token_ids", result.generated_token_ids},
      {"text", result.text},
      {"finish_reason", result.finish_reason == engine::FinishReason::kStop ? "stop" : "length"},
      {"prefill_seconds", result.prefill_seconds},
      {"decode_seconds", result.decode_seconds},
      {"prefill_tokens_per_s", result.prefill_tokens_per_s()},
      {"decode_tokens_per_s", result.decode_tokens_per_s()},
      {"policy", result.policy},
      {"blocks_attended", result.stream.blocks_attended},
      {"blocks_total", result.stream.blocks_total},
      {"tokens_attended", result.stream.tokens_attended},
      {"tokens_total", result.stream.tokens_total},
      {"key_cache_bytes", result.key_cache_bytes},
      {"tokens_evicted", result.tokens_evicted},
      {"device", flags.runtime.device},
      {"kv_dtype", flags.runtime.kv_dtype},
      {"kv_block", flags.runtime.kv_block},
      {"kv_mode", result.kv_mode == kv::KvMode::kStreaming ? "streaming" : "resident"},
      {"head_group_size", result.stream.head_group_size},
      {"blocks_per_group", result.stream.blocks_per_group},
      {"bytes_staged", result.stream.bytes_staged},
      {"copy_seconds", result.copies.busy_seconds},
      {"copy_wait_seconds", result.stream.copy_wait_seconds},
      {"compute_seconds", result.stream.compute_seconds},
      {"stream_wall_seconds", result.stream.wall_seconds},
      {"overlap_seconds", std::max(0.0, result.copies.busy_seconds + result.stream.compute_seconds -
                                            result.stream.wall_seconds)},
      {"world_size", cluster == nullptr ? 1 : cluster->transport().size()},
      {"placement", flags.runtime.placement},
      {"mode", flags.runtime.mode},
      {"delegate_calls", result.stream.delegate_calls},
      {"pull_items", result.stream.pull_items},
      {"bytes_pulled", result.stream.bytes_pulled},
      {"remote_wait_seconds", result.stream.remote_wait_seconds},
      {"disk_bytes_read", result.stream.disk_bytes_read},
      {"bytes_fetched", result.stream.bytes_fetched},
      {"disk_seconds", result.stream.disk_seconds},
      {"ranks", RankStats(result, cluster, memory)},
  };
  std::ofstream out(path);
  out << stats.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  if (!out) return absl::UnavailableError("cannot write stats to " + path);
  return absl::OkStatus();
}

int RunGenerate(const GenerateFlags& flags) {
  std::string prompt = flags.prompt;
  if (!flags.prompt_file.empty()) {
    std::ifstream in(flags.prompt_file, std::ios::binary);
    if (!in) return Fail(absl::NotFoundError("cannot read prompt file " + flags.prompt_file));
    std::ostringstream text;
    text << in.rdbuf();
    prompt = text.str();
  }
  if (!flags.remote.server.empty()) {
    RemoteGenerateRequest request;
    request.connection = flags.remote;
    request.prompt = prompt;
    request.system = flags.system;
    request.chat = flags.chat;
    request.max_tokens = flags.n;
    request.temperature = flags.temp;
    request.top_k = flags.top_k;
    request.top_p = flags.top_p;
    request.min_p = flags.min_p;
    request.repetition_penalty = flags.repeat_penalty;
    request.seed = flags.seed;
    request.stop = flags.stop;
    request.ignore_eos = flags.ignore_eos;
    request.stats_json = flags.stats_json;
    if (flags.runtime.attention.given) {
      absl::StatusOr<kv::AttentionPolicy> policy = PolicyFromFlags(flags.runtime.attention);
      if (!policy.ok()) return Fail(policy.status());
      request.policy = *policy;
    }
    return RunRemoteGenerate(request);
  }

  absl::StatusOr<Runtime> started = StartRuntime(flags.runtime, "generate");
  if (!started.ok()) return Fail(started.status());
  Runtime& rt = *started;
  if (rt.memory_rank()) return rt.cluster->ServeMemoryRank(flags.runtime.threads);
  ClusterSession* cluster = rt.cluster.get();
  auto fail = [&rt](const absl::Status& status) { return rt.FailJob("generate", status); };

  absl::StatusOr<std::unique_ptr<model::LlamaModel>> llm =
      model::LlamaModel::Load(flags.runtime.model, rt.pool.get());
  if (!llm.ok()) return fail(llm.status());
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromGguf((*llm)->file());
  if (!tokenizer.ok()) return fail(tokenizer.status());

  if (flags.chat) {
    absl::StatusOr<std::string> chat_template = (*llm)->file().GetString("tokenizer.chat_template");
    if (!chat_template.ok()) {
      return fail(absl::InvalidArgumentError(
          "--chat needs a chat template, and the model has no tokenizer.chat_template"));
    }
    std::vector<model::ChatMessage> messages;
    if (!flags.system.empty()) messages.push_back({"system", flags.system});
    messages.push_back({"user", prompt});
    absl::StatusOr<std::string> templated =
        model::ApplyChatTemplate(*chat_template, messages, true);
    if (!templated.ok()) return fail(templated.status());
    prompt = *templated;
  }
  const std::vector<int32_t> ids = tokenizer->Encode(prompt, /*add_special=*/true,
                                                     /*parse_special=*/true);

  engine::GenerateOptions options = rt.base;
  options.max_tokens = flags.n;
  options.sampling.temperature = flags.temp;
  options.sampling.top_k = flags.top_k;
  options.sampling.top_p = flags.top_p;
  options.sampling.min_p = flags.min_p;
  options.sampling.repetition_penalty = flags.repeat_penalty;
  options.sampling.seed = flags.seed;
  options.stop = flags.stop;
  options.ignore_eos = flags.ignore_eos;
  options.keep_prompt_logits = !flags.dump_logits.empty();
  if (ids.size() > static_cast<size_t>(options.prefill_chunk)) {
    const auto start = std::chrono::steady_clock::now();
    options.on_prefill_progress = [start](int64_t done, int64_t total) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = done / std::max(s, 1e-9);
      std::fprintf(stderr, "prefill: %lld/%lld tokens, %.0f tok/s, eta %.0f s\n",
                   static_cast<long long>(done), static_cast<long long>(total), rate,
                   (total - done) / rate);
    };
  }

  absl::StatusOr<engine::GenerateResult> result =
      engine::Generate(**llm, *tokenizer, ids, options,
                       [](std::string_view text) { std::cout << text << std::flush; });
  std::cout << "\n" << std::flush;
  if (!result.ok()) return fail(result.status());

  std::fprintf(stderr,
               "prefill: %zu tokens in %.2f s (%.1f tok/s) | decode: %zu tokens in %.2f s "
               "(%.1f tok/s)\n",
               result->prompt_token_ids.size(), result->prefill_seconds,
               result->prefill_tokens_per_s(), result->generated_token_ids.size(),
               result->decode_seconds, result->decode_tokens_per_s());
  if (result->kv_mode == kv::KvMode::kStreaming) {
    std::fprintf(stderr,
                 "kv: streamed from host, head group %d kv heads x %d blocks | device peak %.1f "
                 "MiB of %.1f MiB, host peak %.1f MiB | copy %.2f s, compute %.2f s, wall %.2f s\n",
                 result->stream.head_group_size, result->stream.blocks_per_group,
                 result->device_tier.peak_bytes / 1048576.0,
                 result->device_tier.budget_bytes / 1048576.0,
                 result->host_tier.peak_bytes / 1048576.0, result->copies.busy_seconds,
                 result->stream.compute_seconds, result->stream.wall_seconds);
  }
  std::vector<attention::MemoryRankStats> memory;
  if (cluster != nullptr) {
    absl::StatusOr<std::vector<attention::MemoryRankStats>> collected =
        attention::CollectMemoryRankStats(cluster->transport());
    if (!collected.ok()) return fail(collected.status());
    memory = std::move(*collected);
    if (absl::Status s = cluster->StopMemoryRanks(); !s.ok()) return fail(s);
    if (result->stream.delegate_calls + result->stream.pull_items > 0) {
      std::fprintf(stderr,
                   "cluster: %lld delegate calls, %lld pulled items (%.1f MiB), waited %.2f s "
                   "for delegated partials\n",
                   static_cast<long long>(result->stream.delegate_calls),
                   static_cast<long long>(result->stream.pull_items),
                   result->stream.bytes_pulled / 1048576.0, result->stream.remote_wait_seconds);
    }
  }
  if (!flags.stats_json.empty()) {
    if (absl::Status s = WriteStats(flags.stats_json, flags, **llm, *result, cluster, memory);
        !s.ok())
      return fail(s);
  }
  if (!flags.dump_logits.empty()) {
    std::ofstream out(flags.dump_logits, std::ios::binary);
    out.write(reinterpret_cast<const char*>(result->prompt_logits.data()),
              static_cast<std::streamsize>(result->prompt_logits.size() * sizeof(float)));
    if (!out) return fail(absl::UnavailableError("cannot write logits to " + flags.dump_logits));
  }
  return 0;
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app, CommandRunner& run) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate text from a prompt (one process, or distributed under mpirun/srun)");
  AddRuntimeOptions(*cmd, flags->runtime);
  cmd->add_option("--server", flags->remote.server,
                  "Ask this headwise server (host:port) instead of running the model here");
  AddConnectionOptions(*cmd, flags->remote);
  auto* prompt = cmd->add_option("-p,--prompt", flags->prompt, "Prompt text");
  auto* file = cmd->add_option("-f,--file", flags->prompt_file, "Read the prompt from a file");
  prompt->excludes(file);
  cmd->add_option("-n,--max-tokens", flags->n, "Tokens to generate")
      ->envname(EnvTwin("max-tokens"))
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--chat", flags->chat, "Wrap the prompt in the model's chat template");
  cmd->add_option("--system", flags->system, "System message for --chat");
  cmd->add_option("--temp", flags->temp, "Sampling temperature; 0 is greedy")
      ->envname(EnvTwin("temp"))
      ->capture_default_str();
  cmd->add_option("--top-k", flags->top_k, "Keep the k most likely tokens (0: off)")
      ->envname(EnvTwin("top-k"))
      ->capture_default_str();
  cmd->add_option("--top-p", flags->top_p, "Nucleus sampling mass (1: off)")
      ->envname(EnvTwin("top-p"))
      ->capture_default_str();
  cmd->add_option("--min-p", flags->min_p, "Drop tokens below min-p x the top probability")
      ->envname(EnvTwin("min-p"))
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", flags->repeat_penalty, "Repetition penalty (1: off)")
      ->envname(EnvTwin("repeat-penalty"))
      ->capture_default_str();
  cmd->add_option("--seed", flags->seed, "Sampling seed")
      ->envname(EnvTwin("seed"))
      ->capture_default_str();
  cmd->add_option("--stop", flags->stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating past end-of-generation tokens");
  cmd->add_option("--stats-json", flags->stats_json, "Write run statistics as JSON to this file")
      ->envname(EnvTwin("stats-json"));
  cmd->add_option("--dump-logits", flags->dump_logits,
                  "Write the logits after the last prompt token (raw float32) to this file");
  AddEnvTwins(*cmd);
  cmd->callback([flags, prompt, file, &run] {
    if (prompt->count() == 0 && file->count() == 0) {
      throw CLI::RequiredError("-p/--prompt or -f/--file");
    }
    run = [flags] { return RunGenerate(*flags); };
  });
}

}  // namespace headwise::launcher
