// The single-sequence generation loop: chunked prefill of the prompt, then
// decode with sampling until max tokens, an end-of-generation token or a stop
// string. Text is streamed through a callback as complete UTF-8 only, and
// never includes (a prefix of) a stop string that later completes.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/device/device.h"
#include "runtime/kv/kv_store.h"
#include "runtime/model/llama.h"
#include "runtime/model/sampler.h"
#include "runtime/model/tokenizer.h"

namespace headwise::engine {

struct GenerateOptions {
  int32_t max_tokens = 128;
  model::SamplingParams sampling;
  std::vector<std::string> stop;        // stop strings; the text ends before the first match
  std::vector<int32_t> stop_token_ids;  // generation ends at these (not emitted)
  bool ignore_eos = false;
  int32_t prefill_chunk = 4096;  // prompt tokens per forward
  int32_t kv_block = 256;        // tokens per KV block
  kernels::KvDtype kv_dtype = kernels::KvDtype::kF32;
  bool keep_prompt_logits = false;  // fill GenerateResult::prompt_logits
  // Called after each prefill chunk with (tokens done, prompt tokens).
  std::function<void(int64_t, int64_t)> on_prefill_progress;
  // Polled between prefill chunks and between tokens; a non-OK status
  // (CANCELLED, DEADLINE_EXCEEDED) ends generation with that status.
  std::function<absl::Status()> check_cancel;
  device::Device* device = nullptr;  // required; not owned
  int64_t device_budget_bytes = 0;   // 0: unlimited
  int64_t host_budget_bytes = 0;     // 0: unlimited
  // Distributed KV (this process is the coordinator): see KvStoreOptions.
  comm::KvTransport* transport = nullptr;  // not owned; null: one process
  cluster::PlacementPolicy placement = cluster::PlacementPolicy::kHeadMajor;
  cluster::ExecMode mode = cluster::ExecMode::kAuto;
  cluster::CostModel costs;
  std::shared_ptr<cluster::PoolLedger> pools;  // shared by stores on one transport
  // This rank's disk tier (--disk-dir, --disk-mem) and, when sessions share
  // it, the pool itself; see KvStoreOptions.
  kv::DiskTierOptions disk;
  std::shared_ptr<kv::DiskPool> disk_pool;
  kv::AttentionPolicy policy;  // decode steps' attention (exact by default)
};

enum class FinishReason { kStop, kLength };

struct GenerateResult {
  std::vector<int32_t> prompt_token_ids;
  std::vector<int32_t> generated_token_ids;
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<float> prompt_logits;  // logits after the last prompt token
  double prefill_seconds = 0;
  double decode_seconds = 0;
  kv::KvMode kv_mode = kv::KvMode::kResident;
  std::string policy = "exact";  // the store's policy, described (approximate ones say so)
  // quantkv: the quantized keys' bytes on the coordinator, and the (layer,
  // kv head, token)s evicted by the end of the request.
  int64_t key_cache_bytes = 0;
  int64_t tokens_evicted = 0;
  kv::TierStats device_tier;
  kv::TierStats host_tier;
  // Distributed runs: every rank's share of the sealed blocks (rank 0's is
  // part of host_tier/device_tier too), by rank; and of the disk tiers.
  std::vector<kv::TierStats> rank_pools;
  std::vector<kv::TierStats> rank_disks;
  attention::StreamStats stream;
  device::CopyStats copies;
  double prefill_tokens_per_s() const;
  double decode_tokens_per_s() const;
};

// Called with each new piece of text as soon as it is final.
using TextCallback = std::function<void(std::string_view)>;

// InvalidArgument for an empty prompt, invalid options or a prompt that
// exceeds the model's context length.
absl::StatusOr<GenerateResult> Generate(model::LlamaModel& llm, const model::Tokenizer& tokenizer,
                                        std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const TextCallback& on_text);

// The pieces Generate is made of, for callers that keep a store across
// requests (sessions).
// The store options `options` stand for (device, budgets, KV dtype and
// block, distribution, disk tier).
kv::KvStoreOptions StoreOptions(const model::LlamaModel& llm, const GenerateOptions& options,
                                int64_t capacity_tokens);
// A KV store for `llm` configured by `options` (device, budgets, KV dtype and
// block, distribution) for sequences of up to `capacity_tokens`.
absl::StatusOr<std::unique_ptr<kv::KvStore>> CreateStore(const model::LlamaModel& llm,
                                                         const GenerateOptions& options,
                                                         int64_t capacity_tokens);
// Runs `tokens` through the model in chunks of options.prefill_chunk,
// appending to `store`, reporting progress and polling cancellation. Leaves
// the last token's logits in `last_logits` when non-null.
absl::Status Prefill(model::LlamaModel& llm, kv::KvStore& store, std::span<const int32_t> tokens,
                     const GenerateOptions& options, std::vector<float>* last_logits,
                     attention::StreamStats* stats);
// Generate on a store that may already hold a context: the prompt continues
// it. The store keeps what was generated (callers truncate to drop it).
absl::StatusOr<GenerateResult> GenerateOn(model::LlamaModel& llm, const model::Tokenizer& tokenizer,
                                          kv::KvStore& store, std::span<const int32_t> prompt,
                                          const GenerateOptions& options,
                                          const TextCallback& on_text);

}  // namespace headwise::engine
