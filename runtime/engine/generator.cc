// Prefill runs the prompt in chunks of options.prefill_chunk tokens (so
// activations stay bounded whatever the prompt length); decode feeds one
// token at a time. Stop strings are matched on the decoded text; text that
// could still grow into a stop string is held back until it cannot.
#include "runtime/engine/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace headwise::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Length of the longest suffix of `text` that is a proper prefix of a stop string.
size_t HeldBack(std::string_view text, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const std::string& s : stop) {
    for (size_t len = std::min(s.size() - 1, text.size()); len > held; --len) {
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        held = len;
        break;
      }
    }
  }
  return held;
}

}  // namespace

double GenerateResult::prefill_tokens_per_s() const {
  return prefill_seconds > 0 ? prompt_token_ids.size() / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_s() const {
  // The first generated token comes from the prefill's logits; decode
  // forwards are the remaining ones.
  const size_t decoded = generated_token_ids.empty() ? 0 : generated_token_ids.size() - 1;
  return decode_seconds > 0 ? decoded / decode_seconds : 0.0;
}

absl::StatusOr<GenerateResult> Generate(model::LlamaModel& llm, const model::Tokenizer& tokenizer,
                                        std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const TextCallback& on_text) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max tokens must be >= 0, got ", options.max_tokens));
  }
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill chunk must be >= 1 token, got ", options.prefill_chunk));
  }
  if (options.kv_block < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv block must be >= 1 token, got ", options.kv_block));
  }
  for (const std::string& s : options.stop) {
    if (s.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
  }
  if (absl::Status status = model::ValidateSamplingParams(options.sampling); !status.ok()) {
    return status;
  }
  const int64_t context = llm.info().context_length;
  const int64_t needed = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  if (context > 0 && needed > context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt of ", prompt.size(), " tokens plus ", options.max_tokens,
                     " new tokens exceeds the model's context length of ", context, " tokens"));
  }

  if (options.device == nullptr) return absl::InvalidArgumentError("no device to generate on");
  absl::StatusOr<std::unique_ptr<kv::KvStore>> store = CreateStore(llm, options, needed);
  if (!store.ok()) return store.status();
  return GenerateOn(llm, tokenizer, **store, prompt, options, on_text);
}

kv::KvStoreOptions StoreOptions(const model::LlamaModel& llm, const GenerateOptions& options,
                                int64_t capacity_tokens) {
  kv::KvStoreOptions store_options;
  store_options.geometry = llm.KvGeometryFor(options.kv_block, options.kv_dtype);
  store_options.device = options.device;
  store_options.device_budget_bytes = options.device_budget_bytes;
  store_options.host_budget_bytes = options.host_budget_bytes;
  store_options.capacity_tokens = capacity_tokens;
  store_options.max_append_tokens = options.prefill_chunk;
  store_options.transport = options.transport;
  store_options.placement = options.placement;
  store_options.mode = options.mode;
  store_options.costs = options.costs;
  store_options.pools = options.pools;
  store_options.disk = options.disk;
  store_options.disk_pool = options.disk_pool;
  store_options.policy = options.policy;
  return store_options;
}

absl::StatusOr<std::unique_ptr<kv::KvStore>> CreateStore(const model::LlamaModel& llm,
                                                         const GenerateOptions& options,
                                                         int64_t capacity_tokens) {
  if (options.device == nullptr) return absl::InvalidArgumentError("no device to generate on");
  return kv::KvStore::Create(StoreOptions(llm, options, capacity_tokens));
}

absl::Status Prefill(model::LlamaModel& llm, kv::KvStore& store, std::span<const int32_t> tokens,
                     const GenerateOptions& options, std::vector<float>* last_logits,
                     attention::StreamStats* stats) {
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill chunk must be >= 1 token, got ", options.prefill_chunk));
  }
  for (size_t begin = 0; begin < tokens.size(); begin += options.prefill_chunk) {
    if (options.check_cancel) {
      if (absl::Status s = options.check_cancel(); !s.ok()) return s;
    }
    const size_t n = std::min<size_t>(options.prefill_chunk, tokens.size() - begin);
    const bool last = begin + n == tokens.size();
    absl::Status status =
        llm.Forward(tokens.subspan(begin, n), store, last ? last_logits : nullptr, nullptr, stats);
    if (!status.ok()) return status;
    if (options.on_prefill_progress) {
      options.on_prefill_progress(static_cast<int64_t>(begin + n),
                                  static_cast<int64_t>(tokens.size()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> GenerateOn(model::LlamaModel& llm, const model::Tokenizer& tokenizer,
                                          kv::KvStore& cache, std::span<const int32_t> prompt,
                                          const GenerateOptions& options,
                                          const TextCallback& on_text) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  GenerateResult result;
  result.prompt_token_ids.assign(prompt.begin(), prompt.end());
  result.kv_mode = cache.mode();
  result.policy = cache.policy().Describe();
  const device::CopyStats copies_before = options.device->copy_stats();
  std::vector<float> logits;

  const Clock::time_point prefill_start = Clock::now();
  if (absl::Status s = Prefill(llm, cache, prompt, options, &logits, &result.stream); !s.ok()) {
    return s;
  }
  result.prefill_seconds = Seconds(prefill_start);
  if (options.keep_prompt_logits) result.prompt_logits = logits;

  model::Sampler sampler(options.sampling);
  model::StreamingDecoder decoder(tokenizer);
  std::vector<int32_t> history = result.prompt_token_ids;
  // Decoded text not yet passed on. Held-back text is the longest suffix that
  // is a proper prefix of a stop string, so a stop string can only ever
  // complete inside `pending`, never straddle text already emitted.
  std::string pending;
  auto emit = [&](size_t n) {
    if (n == 0) return;
    if (on_text) on_text(std::string_view(pending).substr(0, n));
    result.text.append(pending, 0, n);
    pending.erase(0, n);
  };
  auto hit_stop = [&] {
    size_t at = std::string::npos;
    for (const std::string& s : options.stop) at = std::min(at, pending.find(s));
    if (at == std::string::npos) return false;
    pending.resize(at);
    emit(at);
    result.finish_reason = FinishReason::kStop;
    return true;
  };

  result.finish_reason = FinishReason::kLength;
  bool stopped = false;
  const Clock::time_point decode_start = Clock::now();
  for (int32_t i = 0; i < options.max_tokens && !stopped; ++i) {
    if (options.check_cancel) {
      if (absl::Status s = options.check_cancel(); !s.ok()) return s;
    }
    if (i > 0) {
      absl::Status status = llm.Forward(std::span<const int32_t>(&history.back(), 1), cache,
                                        &logits, nullptr, &result.stream);
      if (!status.ok()) return status;
    }
    const int32_t token = sampler.Sample(logits, history);
    history.push_back(token);
    if ((!options.ignore_eos && tokenizer.IsEog(token)) ||
        std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
            options.stop_token_ids.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    result.generated_token_ids.push_back(token);
    pending += decoder.Push(token);
    stopped = hit_stop();
    if (!stopped) emit(pending.size() - HeldBack(pending, options.stop));
  }
  if (!stopped) {
    pending += decoder.Flush();
    if (!hit_stop()) emit(pending.size());
  }
  result.decode_seconds = Seconds(decode_start);
  result.device_tier = cache.tier_stats(kv::Tier::kDevice);
  if (const kv::KeyCache* keys = cache.key_cache(); keys != nullptr) {
    result.key_cache_bytes = keys->bytes();
    result.tokens_evicted = keys->n_evicted();
  }
  result.host_tier = cache.tier_stats(kv::Tier::kHost);
  if (const cluster::PlacementPlan* plan = cache.placement(); plan != nullptr) {
    for (int32_t r = 0; r < plan->world_size(); ++r) {
      result.rank_pools.push_back({plan->used_bytes(r), plan->peak_bytes(r),
                                   r == 0 ? options.host_budget_bytes : plan->pool_bytes(r)});
      const cluster::PoolTier disk = cluster::PoolTier::kDisk;
      result.rank_disks.push_back(
          {plan->used_bytes(r, disk), plan->peak_bytes(r, disk), plan->pool_bytes(r, disk)});
    }
  }
  const device::CopyStats copies_after = options.device->copy_stats();
  result.copies.bytes_to_device = copies_after.bytes_to_device - copies_before.bytes_to_device;
  result.copies.bytes_to_host = copies_after.bytes_to_host - copies_before.bytes_to_host;
  result.copies.busy_seconds = copies_after.busy_seconds - copies_before.busy_seconds;
  return result;
}

}  // namespace headwise::engine
