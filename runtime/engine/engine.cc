// Requests take turns in arrival order (a deque of waiting tickets); a
// waiting request polls its cancellation so a client that gives up leaves
// the queue at once. Session ids are random 64-bit hex strings.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/attention/remote.h"
#include "runtime/engine/session_snapshot.h"

namespace headwise::engine {

struct Engine::Session {
  std::unique_ptr<kv::KvStore> store;
  int64_t context_tokens = 0;
};

class Engine::Turn {
 public:
  explicit Turn(Engine& engine) : engine_(engine) {}
  ~Turn() {
    std::lock_guard lock(engine_.mu_);
    engine_.serving_ = 0;
    engine_.turn_cv_.notify_all();
  }

 private:
  Engine& engine_;
};

namespace {

constexpr char kMark[] = "\x1e\x1e";  // splits a rendered chat turn around the context

// Every session's store places blocks in the same pools: one slot ledger.
EngineOptions WithPools(const model::LlamaModel& llm, EngineOptions options) {
  GenerateOptions& base = options.base;
  kv::KvStoreOptions store = StoreOptions(llm, base, 0);
  if (base.disk.bytes > 0 && base.disk_pool == nullptr) {
    absl::StatusOr<std::shared_ptr<kv::DiskPool>> disk = kv::MakeDiskPool(store);
    if (disk.ok()) base.disk_pool = store.disk_pool = std::move(*disk);
  }
  const bool distributed = base.transport != nullptr && base.transport->size() > 1;
  if ((distributed || base.disk_pool != nullptr) && base.pools == nullptr) {
    absl::StatusOr<std::shared_ptr<cluster::PoolLedger>> pools = kv::MakePoolLedger(store);
    if (pools.ok()) base.pools = std::move(*pools);  // else each store reports the error
  }
  return options;
}

}  // namespace

Engine::Engine(model::LlamaModel& llm, const model::Tokenizer& tokenizer, EngineOptions options)
    : llm_(llm), tokenizer_(tokenizer), options_(WithPools(llm, std::move(options))) {
  absl::StatusOr<std::string> chat_template = llm_.file().GetString("tokenizer.chat_template");
  if (chat_template.ok()) {
    absl::StatusOr<std::string> rendered =
        model::ApplyChatTemplate(*chat_template, {{"user", kMark}}, true);
    if (rendered.ok()) {
      const size_t at = rendered->find(kMark);
      if (at != std::string::npos) {
        chat_prefix_ = rendered->substr(0, at);
        chat_suffix_ = rendered->substr(at + sizeof(kMark) - 1);
      }
    }
  }
}

Engine::~Engine() = default;

std::vector<int32_t> Engine::EncodeText(const std::string& text) const {
  return tokenizer_.Encode(text, /*add_special=*/true, /*parse_special=*/true);
}

absl::StatusOr<std::vector<int32_t>> Engine::EncodeChat(
    const std::vector<model::ChatMessage>& messages) const {
  absl::StatusOr<std::string> chat_template = llm_.file().GetString("tokenizer.chat_template");
  if (!chat_template.ok()) {
    return absl::InvalidArgumentError("chat input needs a chat template; the model has none");
  }
  absl::StatusOr<std::string> text = model::ApplyChatTemplate(*chat_template, messages, true);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  return EncodeText(*text);
}

GenerateOptions Engine::Options(const RequestOptions& request) const {
  GenerateOptions options = options_.base;
  options.sampling = request.sampling;
  options.max_tokens = request.max_tokens;
  options.stop = request.stop;
  options.stop_token_ids = request.stop_token_ids;
  options.ignore_eos = request.ignore_eos;
  options.check_cancel = request.check_cancel;
  if (request.policy) options.policy = *request.policy;
  return options;
}

int64_t Engine::MaxContextTokens() const {
  const int64_t model_context = llm_.info().context_length;
  const int64_t token_bytes =
      llm_.KvGeometryFor(options_.base.kv_block, options_.base.kv_dtype).TokenBytes();
  int64_t pools = options_.base.host_budget_bytes;
  if (pools == 0) return model_context;
  pools += options_.base.disk.bytes;
  if (const comm::KvTransport* t = options_.base.transport; t != nullptr) {
    for (int r = 1; r < t->size(); ++r) {
      pools += t->peers()[r].pool_bytes;
      if (r < static_cast<int>(options_.base.costs.ranks.size())) {
        pools += options_.base.costs.ranks[r].disk_bytes;
      }
    }
  }
  const int64_t fits = pools / token_bytes;
  return model_context > 0 ? std::min(model_context, fits) : fits;
}

absl::Status Engine::CheckFits(int64_t tokens, const RequestOptions& request) const {
  const int64_t max = MaxContextTokens();
  if (max > 0 && tokens + request.max_tokens > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokens, " tokens plus ", request.max_tokens, " new tokens exceed the ", max,
                     "-token context this cluster can hold (model context ",
                     llm_.info().context_length, ", KV pools of every rank)"));
  }
  return absl::OkStatus();
}

absl::Status Engine::Count(absl::Status status) {
  std::lock_guard lock(mu_);
  ++counters_.requests;
  if (!status.ok()) ++counters_.errors;
  return status;
}

absl::StatusOr<std::unique_ptr<Engine::Turn>> Engine::WaitTurn(const RequestOptions& request,
                                                               bool bounded) {
  std::unique_lock lock(mu_);
  if (bounded && counters_.queued >= options_.max_queued && serving_ != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request queue full: ", counters_.queued, " requests waiting (limit ",
                     options_.max_queued, ") behind the running one; retry later"));
  }
  const uint64_t ticket = ++next_ticket_;
  waiting_.push_back(ticket);
  ++counters_.queued;
  while (serving_ != 0 || waiting_.front() != ticket) {
    turn_cv_.wait_for(lock, std::chrono::milliseconds(50));
    if (request.check_cancel) {
      lock.unlock();
      absl::Status cancelled = request.check_cancel();
      lock.lock();
      if (!cancelled.ok()) {
        waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
        --counters_.queued;
        turn_cv_.notify_all();
        return cancelled;
      }
    }
  }
  waiting_.pop_front();
  --counters_.queued;
  serving_ = ticket;
  turn_cv_.notify_all();
  return std::make_unique<Turn>(*this);
}

absl::StatusOr<GenerateResult> Engine::Generate(const std::vector<int32_t>& prompt,
                                                const RequestOptions& request,
                                                const TextCallback& on_text) {
  if (prompt.empty()) return Count(absl::InvalidArgumentError("the prompt is empty"));
  if (absl::Status s = CheckFits(static_cast<int64_t>(prompt.size()), request); !s.ok()) {
    return Count(s);
  }
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(request);
  if (!turn.ok()) return Count(turn.status());
  absl::StatusOr<GenerateResult> result =
      engine::Generate(llm_, tokenizer_, prompt, Options(request), on_text);
  if (absl::Status s = Count(result.status()); !s.ok()) return s;
  return result;
}

absl::StatusOr<std::string> Engine::ReadContextFile(const std::string& path) const {
  if (options_.context_dir.empty()) {
    return absl::PermissionDeniedError(
        "this server reads no context files (start it with --context-dir DIR)");
  }
  std::error_code error;
  const std::filesystem::path root = std::filesystem::weakly_canonical(options_.context_dir, error);
  const std::filesystem::path file =
      std::filesystem::weakly_canonical(options_.context_dir / path, error);
  const std::string root_text = root.string() + "/";
  if (error || file.string().compare(0, root_text.size(), root_text) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("context path '", path, "' is outside --context-dir"));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no context file '", path, "'"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::string> Engine::OpenSession(const std::string& context,
                                                const PrefillCallback& progress,
                                                const RequestOptions& request) {
  if (context.empty()) return Count(absl::InvalidArgumentError("the context is empty"));
  const std::vector<int32_t> tokens = EncodeText(chat_prefix_ + context);
  // Room for a question and its answer after the context.
  if (absl::Status s = CheckFits(static_cast<int64_t>(tokens.size()), request); !s.ok()) {
    return Count(s);
  }
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(request);
  if (!turn.ok()) return Count(turn.status());
  GenerateOptions options = Options(request);
  const int64_t capacity = std::max<int64_t>(MaxContextTokens(), int64_t(tokens.size()) + 1);
  absl::StatusOr<std::unique_ptr<kv::KvStore>> store = CreateStore(llm_, options, capacity);
  if (!store.ok()) return Count(store.status());
  if (progress) {
    const kv::KvStore* cache = store->get();
    options.on_prefill_progress = [&progress, cache](int64_t done, int64_t total) {
      PrefillProgress p{done, total, {}};
      p.tier_bytes["device"] = cache->tier_stats(kv::Tier::kDevice).used_bytes;
      p.tier_bytes["host"] = cache->tier_stats(kv::Tier::kHost).used_bytes;
      if (const cluster::PlacementPlan* plan = cache->placement(); plan != nullptr) {
        int64_t remote = 0;
        for (int32_t r = 1; r < plan->world_size(); ++r) remote += plan->used_bytes(r);
        p.tier_bytes["remote"] = remote;
        int64_t disk = 0;
        for (int32_t r = 0; r < plan->world_size(); ++r) {
          disk += plan->used_bytes(r, cluster::PoolTier::kDisk);
        }
        if (disk > 0) p.tier_bytes["disk"] = disk;
      }
      progress(p);
    };
  }
  if (absl::Status s = Prefill(llm_, **store, tokens, options, nullptr, nullptr); !s.ok()) {
    return Count(s);
  }
  // A client gone during the last prefill chunk gets no id: keeping the
  // session would hold its KV on every rank with nobody able to close it.
  if (request.check_cancel) {
    if (absl::Status s = request.check_cancel(); !s.ok()) return Count(s);
  }
  auto session = std::make_unique<Session>();
  session->store = std::move(*store);
  session->context_tokens = static_cast<int64_t>(tokens.size());
  std::lock_guard lock(mu_);
  std::mt19937_64 rng(std::random_device{}() ^ (++session_seq_ << 32));
  std::string id = absl::StrFormat("%016x", rng());
  sessions_[id] = std::move(session);
  ++counters_.requests;
  return id;
}

absl::StatusOr<GenerateResult> Engine::Ask(const std::string& session_id,
                                           const std::string& question,
                                           const RequestOptions& request,
                                           const TextCallback& on_text) {
  if (question.empty()) return Count(absl::InvalidArgumentError("the question is empty"));
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(request);
  if (!turn.ok()) return Count(turn.status());
  Session* session = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) session = it->second.get();
  }
  if (session == nullptr) {
    return Count(absl::NotFoundError(absl::StrCat("no session '", session_id, "'")));
  }
  // Continues the context: no BOS, the chat turn closed after the question.
  const std::vector<int32_t> tokens =
      tokenizer_.Encode("\n\n" + question + chat_suffix_, /*add_special=*/false,
                        /*parse_special=*/true);
  if (absl::Status s = CheckFits(session->context_tokens + int64_t(tokens.size()), request);
      !s.ok()) {
    return Count(s);
  }
  absl::StatusOr<GenerateResult> result =
      GenerateOn(llm_, tokenizer_, *session->store, tokens, Options(request), on_text);
  // The scratch tail goes whatever happened, so the context stays as it was.
  absl::Status truncated = session->store->Truncate(session->context_tokens);
  if (!result.ok()) return Count(result.status());
  if (!truncated.ok()) return Count(truncated);
  (void)Count(absl::OkStatus());
  return result;
}

absl::Status Engine::CloseSession(const std::string& session_id, bool persist) {
  if (persist && options_.snapshot_dir.empty()) {
    return Count(absl::FailedPreconditionError(
        "persisting a session needs a snapshot directory (headwise serve --snapshot-dir)"));
  }
  // Never refused for a full queue: closing frees what the queue waits for.
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(RequestOptions{}, /*bounded=*/false);
  if (!turn.ok()) return Count(turn.status());
  Session* session = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) {
      ++counters_.requests, ++counters_.errors;
      return absl::NotFoundError(absl::StrCat("no session '", session_id, "'"));
    }
    session = it->second.get();
  }
  // This turn is the only one touching the session.
  if (persist) {
    if (absl::Status s = SaveSnapshot(llm_, options_, session_id, *session->store,
                                      session->context_tokens, SnapshotDir(session_id));
        !s.ok()) {
      return Count(s);  // the session stays open
    }
  } else if (!options_.snapshot_dir.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(SnapshotDir(session_id), ignored);
  }
  std::unique_ptr<Session> closed;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session_id);
    closed = std::move(it->second);
    sessions_.erase(it);
    ++counters_.requests;
  }
  return absl::OkStatus();  // the store's blocks and pool slots go with it
}

std::filesystem::path Engine::SnapshotDir(const std::string& session_id) const {
  return options_.snapshot_dir / session_id;
}

absl::StatusOr<std::vector<SessionInfo>> Engine::RestoreSessions() {
  std::vector<SessionInfo> restored;
  if (options_.snapshot_dir.empty()) return restored;
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(RequestOptions{});
  if (!turn.ok()) return turn.status();
  std::error_code error;
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(options_.snapshot_dir, error)) {
    if (std::filesystem::exists(entry.path() / kSessionFile)) dirs.push_back(entry.path());
  }
  if (error) {
    return absl::NotFoundError(absl::StrCat("cannot read the snapshot directory ",
                                            options_.snapshot_dir.string(), ": ", error.message()));
  }
  std::sort(dirs.begin(), dirs.end());
  for (const std::filesystem::path& dir : dirs) {
    absl::StatusOr<LoadedSnapshot> loaded = LoadSnapshot(llm_, options_, dir, MaxContextTokens());
    if (!loaded.ok()) return loaded.status();
    auto session = std::make_unique<Session>();
    session->store = std::move(loaded->store);
    session->context_tokens = loaded->context_tokens;
    restored.push_back({loaded->id, loaded->context_tokens, "exact"});
    std::lock_guard lock(mu_);
    sessions_[loaded->id] = std::move(session);
  }
  return restored;
}

std::vector<SessionInfo> Engine::ListSessions() const {
  std::lock_guard lock(mu_);
  std::vector<SessionInfo> out;
  for (const auto& [id, session] : sessions_) {
    out.push_back({id, session->context_tokens, session->store->policy().Describe()});
  }
  return out;
}

absl::StatusOr<std::vector<RankSnapshot>> Engine::ClusterSnapshot(const RequestOptions& request) {
  // Never refused for a full queue (monitoring must see a loaded cluster).
  absl::StatusOr<std::unique_ptr<Turn>> turn = WaitTurn(request, /*bounded=*/false);
  if (!turn.ok()) return turn.status();
  comm::KvTransport* transport = options_.base.transport;
  const int world = transport != nullptr ? transport->size() : 1;
  std::vector<RankSnapshot> ranks(world);
  std::vector<attention::MemoryRankStats> memory(world);
  if (world > 1) {
    absl::StatusOr<std::vector<attention::MemoryRankStats>> collected =
        attention::CollectMemoryRankStats(*transport);
    if (!collected.ok()) return collected.status();
    memory = std::move(*collected);
  }
  std::lock_guard lock(mu_);
  for (const auto& [id, session] : sessions_) {
    for (kv::Tier tier : {kv::Tier::kDevice, kv::Tier::kHost}) {
      const kv::TierStats t = session->store->tier_stats(tier);
      kv::TierStats& sum = tier == kv::Tier::kDevice ? ranks[0].device : ranks[0].host;
      sum.used_bytes += t.used_bytes;
      sum.peak_bytes += t.peak_bytes;
    }
  }
  ranks[0].device.budget_bytes = options_.base.device_budget_bytes;
  ranks[0].host.budget_bytes = options_.base.host_budget_bytes;
  if (const cluster::PoolLedger* pools = options_.base.pools.get(); pools != nullptr) {
    // Rank 0's share of the sealed blocks, over every session (its open
    // tails are in the sessions' host tiers above).
    ranks[0].host.peak_bytes = std::max(ranks[0].host.peak_bytes, pools->peak_bytes(0));
  }
  if (const kv::DiskPool* disk = options_.base.disk_pool.get(); disk != nullptr) {
    ranks[0].disk_bytes_read = disk->stats().bytes_read;
    ranks[0].disk_read_seconds = disk->stats().read_seconds;
  }
  for (int r = 0; r < world; ++r) {
    RankSnapshot& snap = ranks[r];
    snap.rank = r;
    if (const cluster::PoolLedger* pools = options_.base.pools.get(); pools != nullptr) {
      const cluster::PoolTier disk = cluster::PoolTier::kDisk;
      snap.disk = {pools->used_bytes(r, disk), pools->peak_bytes(r, disk),
                   pools->pool_bytes(r, disk)};
    }
    if (r < static_cast<int>(options_.base.costs.ranks.size()))
      snap.probe = options_.base.costs.ranks[r];
    if (transport == nullptr) continue;
    snap.hostname = transport->peers()[r].hostname;
    if (r == 0) continue;
    const comm::PeerTraffic traffic = transport->traffic(r);
    snap.bytes_sent = traffic.bytes_received;
    snap.bytes_received = traffic.bytes_sent;
    ranks[0].bytes_sent += traffic.bytes_sent;
    ranks[0].bytes_received += traffic.bytes_received;
    if (options_.base.pools != nullptr) {
      snap.host = {options_.base.pools->used_bytes(r), options_.base.pools->peak_bytes(r),
                   options_.base.pools->pool_bytes(r)};
    }
    snap.delegate_calls = memory[r].delegate_calls;
    snap.attention_bytes = memory[r].kv_bytes_attended;
    snap.attention_seconds = memory[r].attention_seconds;
    snap.disk_bytes_read = memory[r].disk_bytes_read;
    snap.disk_read_seconds = memory[r].disk_read_seconds;
  }
  return ranks;
}

EngineCounters Engine::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

}  // namespace headwise::engine
