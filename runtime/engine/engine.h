// The coordinator's request engine (DESIGN.md "session"): one model, one
// sequence computed at a time (requests wait in a bounded FIFO), and
// sessions — long contexts prefilled once into the cluster's pools that many
// questions are asked against. A question's tokens and its answer live in a
// scratch tail that is truncated away afterwards (also when the request is
// cancelled or fails), so the context is never re-prefilled and stays
// unchanged. Thread-safe: every public call may come from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/generator.h"
#include "runtime/model/chat_template.h"

namespace headwise::engine {

struct EngineOptions {
  // Device, budgets, KV layout, distribution (transport, placement, mode).
  GenerateOptions base;
  int32_t max_queued = 16;            // requests waiting beyond the running one
  std::filesystem::path context_dir;  // OpenSession paths must lie under it; empty: refused
  // Where persisted sessions are written (CloseSession with persist) and
  // restored from (RestoreSessions); empty: persisting is refused.
  std::filesystem::path snapshot_dir;
};

struct SessionInfo {
  std::string id;
  int64_t context_tokens = 0;
  std::string policy = "exact";
};

struct EngineCounters {
  int64_t requests = 0;
  int64_t errors = 0;
  int64_t queued = 0;  // waiting now
};

// Where a prefill stands: tokens, and the bytes of the sequence's KV in each
// tier ("device", "host" on this rank, "remote" in other ranks' pools).
struct PrefillProgress {
  int64_t done = 0, total = 0;
  std::map<std::string, int64_t> tier_bytes;
};
using PrefillCallback = std::function<void(const PrefillProgress&)>;

// Per-request knobs on top of EngineOptions::base.
struct RequestOptions {
  model::SamplingParams sampling;
  int32_t max_tokens = 128;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::function<absl::Status()> check_cancel;  // CANCELLED / DEADLINE_EXCEEDED
  // The attention policy of a new sequence (Generate, OpenSession; a
  // session's questions use the session's); unset: base.policy.
  std::optional<kv::AttentionPolicy> policy;
};

// One rank as GetClusterStats reports it.
struct RankSnapshot {
  int32_t rank = 0;
  std::string hostname;
  kv::TierStats device;  // rank 0 only
  kv::TierStats host;    // this rank's share of the pools
  kv::TierStats disk;    // its disk tier (budget 0: none)
  int64_t disk_bytes_read = 0;
  double disk_read_seconds = 0;
  int64_t bytes_sent = 0, bytes_received = 0;  // as the coordinator counted them
  int64_t delegate_calls = 0, attention_bytes = 0;
  double attention_seconds = 0;
  cluster::RankProbe probe;
};

class Engine {
 public:
  Engine(model::LlamaModel& llm, const model::Tokenizer& tokenizer, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Tokens of a plain prompt, or of chat messages through the model's chat
  // template (InvalidArgument without one).
  std::vector<int32_t> EncodeText(const std::string& text) const;
  absl::StatusOr<std::vector<int32_t>> EncodeChat(
      const std::vector<model::ChatMessage>& messages) const;

  // A fresh sequence: prefill `prompt`, generate. RESOURCE_EXHAUSTED when the
  // queue is full; INVALID_ARGUMENT for a prompt past the context.
  absl::StatusOr<GenerateResult> Generate(const std::vector<int32_t>& prompt,
                                          const RequestOptions& request,
                                          const TextCallback& on_text);

  // Prefills `context` into a new session and returns its id, reporting
  // progress after every prefill chunk.
  absl::StatusOr<std::string> OpenSession(const std::string& context,
                                          const PrefillCallback& progress,
                                          const RequestOptions& request);
  // A file under options.context_dir (NotFound / PermissionDenied otherwise).
  absl::StatusOr<std::string> ReadContextFile(const std::string& path) const;
  // Asks `question` against a session; the session is unchanged afterwards.
  absl::StatusOr<GenerateResult> Ask(const std::string& session_id, const std::string& question,
                                     const RequestOptions& request, const TextCallback& on_text);
  // Closes a session. With `persist`, first writes it under
  // options.snapshot_dir/<id>/ (every rank its own blocks, rank 0 the
  // table in session.json, written last) so RestoreSessions brings it back;
  // without, a snapshot of it is removed. FailedPrecondition to persist
  // without a snapshot dir.
  absl::Status CloseSession(const std::string& session_id, bool persist = false);
  // Reopens every session persisted under options.snapshot_dir on this
  // cluster (same world size, model and KV layout; each block back on the
  // rank that saved it). A snapshot that does not fit or is corrupt is an
  // error naming it; the sessions restored before it stay.
  absl::StatusOr<std::vector<SessionInfo>> RestoreSessions();
  std::vector<SessionInfo> ListSessions() const;

  // Every rank's pools, traffic, probes and work (takes a turn: memory ranks
  // are asked for their figures).
  absl::StatusOr<std::vector<RankSnapshot>> ClusterSnapshot(const RequestOptions& request);

  // The longest context the cluster's budgets and the model allow, in tokens.
  int64_t MaxContextTokens() const;
  const model::LlamaModel& model() const { return llm_; }
  EngineCounters counters() const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Session;
  class Turn;  // holds the engine for one request, in FIFO order

  // The request's turn, in arrival order; `bounded`: RESOURCE_EXHAUSTED when
  // max_queued requests already wait (closes and cluster stats are not).
  absl::StatusOr<std::unique_ptr<Turn>> WaitTurn(const RequestOptions& request,
                                                 bool bounded = true);
  GenerateOptions Options(const RequestOptions& request) const;
  absl::Status CheckFits(int64_t tokens, const RequestOptions& request) const;
  absl::Status Count(absl::Status status);
  // The snapshot directory of a session.
  std::filesystem::path SnapshotDir(const std::string& session_id) const;

  model::LlamaModel& llm_;
  const model::Tokenizer& tokenizer_;
  const EngineOptions options_;
  // The chat turn around a session's context: the context follows
  // `chat_prefix_`, a question is followed by `chat_suffix_` (the
  // assistant header). Empty without a chat template.
  std::string chat_prefix_, chat_suffix_;

  mutable std::mutex mu_;
  std::condition_variable turn_cv_;
  std::deque<uint64_t> waiting_;  // tickets in arrival order
  uint64_t next_ticket_ = 0;
  uint64_t serving_ = 0;  // the running request's ticket; 0: none
  EngineCounters counters_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
  uint64_t session_seq_ = 0;
};

}  // namespace headwise::engine
