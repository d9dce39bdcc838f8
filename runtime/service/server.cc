// Sync gRPC service: each RPC runs on a gRPC thread and calls the Engine,
// which serialises the model work. Streaming writes happen from inside the
// engine's text/progress callbacks, on the same thread. The bearer token is
// checked by an AuthMetadataProcessor, which gRPC runs on the call's
// metadata before dispatching it, so no handler (ours or reflection's) needs
// its own check and a stream is refused before its first message.
#include "runtime/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "headwise/v1/inference.grpc.pb.h"

namespace headwise::service {
namespace {

namespace v1 = ::headwise::v1;
constexpr char kServiceName[] = "headwise.v1.Inference";

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// CANCELLED when the client went away, DEADLINE_EXCEEDED past its deadline.
std::function<absl::Status()> CancelCheck(grpc::ServerContext* context) {
  return [context] {
    if (context->IsCancelled()) {
      if (std::chrono::system_clock::now() >= context->deadline()) {
        return absl::DeadlineExceededError("the request's deadline passed");
      }
      return absl::CancelledError("the client cancelled the request");
    }
    if (std::chrono::system_clock::now() >= context->deadline()) {
      return absl::DeadlineExceededError("the request's deadline passed");
    }
    return absl::OkStatus();
  };
}

void FillTier(const kv::TierStats& tier, v1::TierUsage* out) {
  out->set_used_bytes(static_cast<uint64_t>(tier.used_bytes));
  out->set_peak_bytes(static_cast<uint64_t>(tier.peak_bytes));
  out->set_budget_bytes(static_cast<uint64_t>(tier.budget_bytes));
}

void FillDisk(const kv::TierStats& tier, int64_t bytes_read, double read_seconds,
              v1::TierUsage* out) {
  FillTier(tier, out);
  out->set_bytes_read(static_cast<uint64_t>(bytes_read));
  out->set_read_gbps(read_seconds > 0 ? bytes_read / read_seconds / 1e9 : 0.0);
}

v1::FinishReason Reason(engine::FinishReason reason) {
  return reason == engine::FinishReason::kStop ? v1::FINISH_REASON_STOP : v1::FINISH_REASON_LENGTH;
}

}  // namespace

absl::StatusOr<std::optional<kv::AttentionPolicy>> PolicyFrom(const v1::Policy& policy) {
  if (policy.name().empty()) {
    if (!policy.params().empty()) {
      return absl::InvalidArgumentError("policy params without a policy name");
    }
    return std::nullopt;
  }
  std::optional<kv::AttentionPolicy::Kind> kind = kv::ParsePolicyKind(policy.name());
  if (!kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown policy '", policy.name(), "' (exact, hybrid or quantkv)"));
  }
  kv::AttentionPolicy out;
  out.kind = *kind;
  for (const auto& param : policy.params()) {
    // Named, not bound: clang 14 cannot capture structured bindings.
    const std::string& key = param.first;
    const std::string& value = param.second;
    if (key == "summary") {
      std::optional<kv::AttentionPolicy::BlockSummary> summary = kv::ParseBlockSummary(value);
      if (!summary) {
        return absl::InvalidArgumentError(
            absl::StrCat("policy param summary='", value, "' must be keys or bounds"));
      }
      out.summary = *summary;
      continue;
    }
    char* end = nullptr;
    const double number = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !std::isfinite(number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy param ", key, "='", value, "' is not a number"));
    }
    const bool integral = number == std::floor(number) && std::fabs(number) < (1 << 30);
    auto whole = [&](int32_t* field) {
      if (!integral) {
        return absl::InvalidArgumentError(
            absl::StrCat("policy param ", key, "='", value, "' must be an integer"));
      }
      *field = static_cast<int32_t>(number);
      return absl::OkStatus();
    };
    absl::Status s;
    if (key == "budget" || key == "kv_budget") {
      out.budget = number;
    } else if (key == "tau") {
      out.tau = number;
    } else if (key == "top_k") {
      s = whole(&out.top_k);
    } else if (key == "token_top_k") {
      s = whole(&out.token_top_k);
    } else if (key == "pool_heads") {
      int32_t pool = 0;
      s = whole(&pool);
      if (s.ok() && pool != 0 && pool != 1) {
        s = absl::InvalidArgumentError(
            absl::StrCat("policy param pool_heads='", value, "' must be 0 or 1"));
      }
      out.pool_heads = pool == 1;
    } else if (key == "key_bits") {
      s = whole(&out.key_bits);
    } else if (key == "window") {
      s = whole(&out.window_tokens);
    } else if (key == "sinks") {
      s = whole(&out.sink_tokens);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown policy param '", key,
                       "' (budget, kv_budget, summary, pool_heads, token_top_k, tau, top_k, "
                       "key_bits, window, sinks)"));
    }
    if (!s.ok()) return s;
  }
  if (absl::Status s = out.Validate(); !s.ok()) return s;
  return out;
}

absl::StatusOr<engine::RequestOptions> RequestOptionsFrom(const v1::SamplingParams& s,
                                                          const v1::Policy& policy) {
  absl::StatusOr<std::optional<kv::AttentionPolicy>> attention = PolicyFrom(policy);
  if (!attention.ok()) return attention.status();
  engine::RequestOptions options;
  options.policy = *attention;
  options.max_tokens = s.max_tokens() == 0 ? 128 : static_cast<int32_t>(s.max_tokens());
  if (s.max_tokens() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", s.max_tokens(), " is absurd"));
  }
  options.sampling.temperature = s.temperature();
  options.sampling.top_p = s.top_p() == 0 ? 1.0f : s.top_p();
  options.sampling.top_k = static_cast<int32_t>(std::min<uint32_t>(s.top_k(), 1u << 30));
  options.sampling.min_p = s.min_p();
  options.sampling.repetition_penalty = s.repetition_penalty() == 0 ? 1.0f : s.repetition_penalty();
  options.sampling.seed = s.seed();
  if (absl::Status v = model::ValidateSamplingParams(options.sampling); !v.ok()) {
    return absl::InvalidArgumentError(v.message());
  }
  for (const std::string& stop : s.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    options.stop.push_back(stop);
  }
  options.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  options.ignore_eos = s.ignore_eos();
  return options;
}

absl::StatusOr<engine::RequestOptions> ValidateGenerateRequest(const v1::GenerateRequest& request,
                                                               int64_t vocab_size) {
  absl::StatusOr<engine::RequestOptions> options =
      RequestOptionsFrom(request.sampling(), request.policy());
  if (!options.ok()) return options.status();
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      break;
    case v1::GenerateRequest::kChat:
      for (const v1::ChatMessage& m : request.chat().messages()) {
        if (m.role().empty()) return absl::InvalidArgumentError("a chat message has no role");
      }
      if (request.chat().messages().empty()) {
        return absl::InvalidArgumentError("no chat messages");
      }
      break;
    case v1::GenerateRequest::kTokenIds:
      for (int32_t id : request.token_ids().ids()) {
        if (id < 0 || id >= vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("token id ", id, " is outside the vocabulary of ", vocab_size));
        }
      }
      break;
    default:
      return absl::InvalidArgumentError("no input: set text, chat or token_ids");
  }
  return options;
}

absl::StatusOr<engine::RequestOptions> ValidateAskRequest(const v1::AskRequest& request) {
  return RequestOptionsFrom(request.sampling(), v1::Policy());
}

absl::Status OpenSessionContext::Add(const v1::OpenSessionRequest& part) {
  if (part.source_case() == v1::OpenSessionRequest::kContextPath) {
    if (!text_.empty() || from_path_) {
      return absl::InvalidArgumentError("give one context_path, or chunks, not both");
    }
    absl::StatusOr<std::string> file = read_file_(part.context_path());
    if (!file.ok()) return file.status();
    text_ = std::move(*file);
    from_path_ = true;
  } else if (part.source_case() == v1::OpenSessionRequest::kContextChunk) {
    if (from_path_) return absl::InvalidArgumentError("give one context_path, or chunks, not both");
    text_ += part.context_chunk();
  }
  if (part.has_policy()) {
    absl::StatusOr<std::optional<kv::AttentionPolicy>> policy = PolicyFrom(part.policy());
    if (!policy.ok()) return policy.status();
    policy_ = *policy;
  }
  return absl::OkStatus();
}

class InferenceService final : public v1::Inference::Service {
 public:
  void Attach(engine::Engine& engine) { engine_.store(&engine); }

  // Called with the first status that says a rank is lost; the server turns
  // readiness NOT_SERVING.
  void OnLost(std::function<void()> callback) { on_lost_ = std::move(callback); }

  void MarkLost(const absl::Status& why) {
    {
      std::lock_guard lock(mu_);
      if (!lost_.ok()) return;
      lost_ = why;
    }
    if (on_lost_) on_lost_();
  }

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    absl::StatusOr<engine::RequestOptions> options =
        ValidateGenerateRequest(*request, engine().model().info().vocab_size);
    if (!options.ok()) return Out(options.status());
    options->check_cancel = CancelCheck(context);
    std::vector<int32_t> prompt;
    switch (request->input_case()) {
      case v1::GenerateRequest::kText:
        prompt = engine().EncodeText(request->text());
        break;
      case v1::GenerateRequest::kChat: {
        std::vector<model::ChatMessage> messages;
        for (const v1::ChatMessage& m : request->chat().messages()) {
          messages.push_back({m.role(), m.content()});
        }
        absl::StatusOr<std::vector<int32_t>> ids = engine().EncodeChat(messages);
        if (!ids.ok()) return Out(ids.status());
        prompt = std::move(*ids);
        break;
      }
      case v1::GenerateRequest::kTokenIds:
        prompt.assign(request->token_ids().ids().begin(), request->token_ids().ids().end());
        break;
      default:  // rejected by ValidateGenerateRequest
        return Out(absl::InvalidArgumentError("no input: set text, chat or token_ids"));
    }
    absl::StatusOr<engine::GenerateResult> result =
        engine().Generate(prompt, *options, Streamer(writer));
    return Finish(result, writer);
  }

  grpc::Status OpenSession(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::OpenSessionResponse, v1::OpenSessionRequest>* stream) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    OpenSessionContext context_text(
        [this](const std::string& path) { return engine().ReadContextFile(path); });
    v1::OpenSessionRequest part;
    while (stream->Read(&part)) {
      if (absl::Status s = context_text.Add(part); !s.ok()) return Out(s);
    }
    absl::StatusOr<engine::RequestOptions> options =
        RequestOptionsFrom(v1::SamplingParams(), v1::Policy());
    if (!options.ok()) return Out(options.status());
    options->policy = context_text.policy();
    options->check_cancel = CancelCheck(context);
    const auto start = std::chrono::steady_clock::now();
    auto progress = [&](const engine::PrefillProgress& at) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      v1::OpenSessionResponse response;
      v1::PrefillProgress* p = response.mutable_progress();
      p->set_processed_tokens(static_cast<uint64_t>(at.done));
      p->set_total_tokens(static_cast<uint64_t>(at.total));
      const double rate = at.done / std::max(s, 1e-9);
      p->set_tokens_per_s(rate);
      p->set_eta_s((at.total - at.done) / std::max(rate, 1e-9));
      for (const auto& [tier, bytes] : at.tier_bytes) {
        (*p->mutable_bytes_per_tier())[tier] = static_cast<uint64_t>(bytes);
      }
      stream->Write(response);
    };
    absl::StatusOr<std::string> id = engine().OpenSession(context_text.text(), progress, *options);
    if (!id.ok()) return Out(id.status());
    v1::OpenSessionResponse done;
    done.set_session_id(*id);
    if (!stream->Write(done)) {
      // The client left before it learnt the id: nobody could close it.
      (void)engine().CloseSession(*id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    return grpc::Status::OK;
  }

  grpc::Status Ask(grpc::ServerContext* context, const v1::AskRequest* request,
                   grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    absl::StatusOr<engine::RequestOptions> options = ValidateAskRequest(*request);
    if (!options.ok()) return Out(options.status());
    options->check_cancel = CancelCheck(context);
    absl::StatusOr<engine::GenerateResult> result =
        engine().Ask(request->session_id(), request->question(), *options, Streamer(writer));
    return Finish(result, writer);
  }

  grpc::Status CloseSession(grpc::ServerContext*, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse*) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    return Out(engine().CloseSession(request->session_id(), request->persist()));
  }

  grpc::Status ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest*,
                            v1::ListSessionsResponse* response) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    for (const engine::SessionInfo& info : engine().ListSessions()) {
      v1::SessionInfo* out = response->add_sessions();
      out->set_session_id(info.id);
      out->set_context_tokens(static_cast<uint64_t>(info.context_tokens));
      out->set_policy(info.policy);
    }
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* response) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    const model::ModelInfo& info = engine().model().info();
    response->set_architecture(info.architecture);
    response->set_name(info.name);
    response->set_n_layers(static_cast<uint32_t>(info.n_layers));
    response->set_n_heads(static_cast<uint32_t>(info.n_heads));
    response->set_n_kv_heads(static_cast<uint32_t>(info.n_kv_heads));
    response->set_head_dim(static_cast<uint32_t>(info.head_dim));
    response->set_vocab_size(static_cast<uint32_t>(info.vocab_size));
    response->set_max_context_tokens(static_cast<uint64_t>(engine().MaxContextTokens()));
    const engine::GenerateOptions& base = engine().options().base;
    response->set_kv_bytes_per_token(static_cast<uint64_t>(
        engine().model().KvGeometryFor(base.kv_block, base.kv_dtype).TokenBytes()));
    return grpc::Status::OK;
  }

  grpc::Status GetClusterStats(grpc::ServerContext* context, const v1::GetClusterStatsRequest*,
                               v1::ClusterStats* response) override {
    if (grpc::Status s = CheckReady(); !s.ok()) return s;
    engine::RequestOptions options;
    options.check_cancel = CancelCheck(context);
    absl::StatusOr<std::vector<engine::RankSnapshot>> ranks = engine().ClusterSnapshot(options);
    if (!ranks.ok()) return Out(ranks.status());
    const engine::EngineCounters counters = engine().counters();
    for (const engine::RankSnapshot& rank : *ranks) {
      v1::RankStats* out = response->add_ranks();
      out->set_rank(rank.rank);
      out->set_hostname(rank.hostname);
      if (rank.rank == 0) FillTier(rank.device, &(*out->mutable_tiers())["device"]);
      FillTier(rank.host, &(*out->mutable_tiers())["host"]);
      if (rank.disk.budget_bytes > 0) {
        FillDisk(rank.disk, rank.disk_bytes_read, rank.disk_read_seconds,
                 &(*out->mutable_tiers())["disk"]);
      }
      out->set_bytes_sent(static_cast<uint64_t>(rank.bytes_sent));
      out->set_bytes_received(static_cast<uint64_t>(rank.bytes_received));
      out->set_requests(
          static_cast<uint64_t>(rank.rank == 0 ? counters.requests : rank.delegate_calls));
      out->set_errors(static_cast<uint64_t>(rank.rank == 0 ? counters.errors : 0));
      out->set_attention_bytes(static_cast<uint64_t>(rank.attention_bytes));
      out->set_attention_seconds(rank.attention_seconds);
      out->set_probe_link_gbps(rank.probe.link_gbps);
      out->set_probe_rtt_seconds(rank.probe.rtt_seconds);
      out->set_probe_attention_gbps(rank.probe.attention_gbps);
    }
    return grpc::Status::OK;
  }

 private:
  // UNAVAILABLE while the model loads and after a rank was lost.
  grpc::Status CheckReady() {
    if (engine_.load() == nullptr) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
    }
    std::lock_guard lock(mu_);
    if (lost_.ok()) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("the cluster lost a rank: ", std::string(lost_.message())));
  }
  engine::Engine& engine() { return *engine_.load(); }

  // The gRPC status for an engine status; UNAVAILABLE means a rank is lost.
  grpc::Status Out(const absl::Status& status) {
    if (absl::IsUnavailable(status)) MarkLost(status);
    return ToGrpc(status);
  }

  static engine::TextCallback Streamer(grpc::ServerWriter<v1::GenerateResponse>* writer) {
    return [writer](std::string_view text) {
      v1::GenerateResponse delta;
      delta.set_text_delta(std::string(text));
      writer->Write(delta);
    };
  }

  grpc::Status Finish(const absl::StatusOr<engine::GenerateResult>& result,
                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
    if (!result.ok()) return Out(result.status());
    v1::GenerateResponse response;
    v1::GenerateResponse::Final* final = response.mutable_final();
    final->set_finish_reason(Reason(result->finish_reason));
    final->mutable_usage()->set_prompt_tokens(
        static_cast<uint32_t>(result->prompt_token_ids.size()));
    final->mutable_usage()->set_completion_tokens(
        static_cast<uint32_t>(result->generated_token_ids.size()));
    for (int32_t id : result->generated_token_ids) final->add_generated_token_ids(id);
    v1::RequestStats* stats = final->mutable_stats();
    stats->set_prefill_tokens_per_s(result->prefill_tokens_per_s());
    stats->set_decode_tokens_per_s(result->decode_tokens_per_s());
    stats->set_policy(result->policy);
    v1::RankStats* rank0 = stats->add_ranks();
    rank0->set_rank(0);
    FillTier(result->device_tier, &(*rank0->mutable_tiers())["device"]);
    FillTier(result->host_tier, &(*rank0->mutable_tiers())["host"]);
    if (!result->rank_disks.empty() && result->rank_disks[0].budget_bytes > 0) {
      FillDisk(result->rank_disks[0], result->stream.disk_bytes_read,
               result->stream.disk_read_seconds, &(*rank0->mutable_tiers())["disk"]);
    }
    for (size_t r = 1; r < result->rank_pools.size(); ++r) {
      v1::RankStats* rank = stats->add_ranks();
      rank->set_rank(static_cast<int32_t>(r));
      FillTier(result->rank_pools[r], &(*rank->mutable_tiers())["host"]);
      if (r < result->rank_disks.size() && result->rank_disks[r].budget_bytes > 0) {
        FillTier(result->rank_disks[r], &(*rank->mutable_tiers())["disk"]);
      }
    }
    writer->Write(response);
    return grpc::Status::OK;
  }

  std::atomic<engine::Engine*> engine_{nullptr};
  std::function<void()> on_lost_;
  std::mutex mu_;
  absl::Status lost_;
};

namespace {

// Health stays open: load balancers probe it without credentials.
constexpr char kHealthPrefix[] = "/grpc.health.v1.Health/";

// Equal iff same length and bytes; the time depends only on `expected`'s
// length, never on where `given` first differs.
bool SameSecret(std::string_view given, std::string_view expected) {
  unsigned char differ = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const char g = i < given.size() ? given[i] : '\0';
    differ |= static_cast<unsigned char>(g ^ expected[i]);
  }
  return differ == 0;
}

// `authorization: Bearer <token>` on every call but health checks. The
// header is consumed, so handlers never see the token. Runs inline on
// gRPC's call set-up (a comparison, nothing that blocks).
class BearerTokenCheck final : public grpc::AuthMetadataProcessor {
 public:
  explicit BearerTokenCheck(const std::string& token) : expected_("Bearer " + token) {}

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext*, OutputMetadata* consumed,
                       OutputMetadata*) override {
    const auto path = metadata.find(":path");
    if (path != metadata.end() && path->second.starts_with(kHealthPrefix)) {
      return grpc::Status::OK;
    }
    const auto header = metadata.find("authorization");
    if (header == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server needs a bearer token (authorization: Bearer <token> "
                          "metadata) and the call has none");
    }
    const std::string given(header->second.data(), header->second.size());
    consumed->emplace("authorization", given);
    if (!SameSecret(given, expected_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
    }
    return grpc::Status::OK;
  }

 private:
  const std::string expected_;
};

// TLS when a certificate is given; otherwise plaintext, and with a token
// gRPC's local credentials, which accept loopback peers (or a unix socket)
// only. A token adds the bearer check on top.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& options) {
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate and its private key, or neither");
  }
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!options.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(tls);
  } else if (!options.auth_token.empty()) {
    credentials = grpc::experimental::LocalServerCredentials(
        absl::StartsWith(options.listen, "unix:") ? UDS : LOCAL_TCP);
  } else {
    return grpc::InsecureServerCredentials();
  }
  if (!options.auth_token.empty()) {
    credentials->SetAuthMetadataProcessor(std::make_shared<BearerTokenCheck>(options.auth_token));
  }
  return credentials;
}

}  // namespace

struct Server::Impl {
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::mutex mu;
  bool shut_down = false;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(0); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto impl = std::make_unique<Impl>();
  impl->service = std::make_unique<InferenceService>();
  Impl* raw = impl.get();
  impl->service->OnLost([raw] {
    if (grpc::HealthCheckServiceInterface* health = raw->server->GetHealthCheckService()) {
      health->SetServingStatus(kServiceName, false);
    }
  });
  grpc::ServerBuilder builder;
  // One server per port: without this gRPC sets SO_REUSEPORT and a second
  // server on the same port would silently share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(options.listen, *credentials, &impl->port);
  builder.RegisterService(impl->service.get());
  grpc::ResourceQuota quota("headwise");
  quota.SetMaxThreads(std::max(2, options.max_threads));
  builder.SetResourceQuota(quota);
  builder.SetMaxReceiveMessageSize(64 << 20);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        options.tls_cert_pem.empty()
            ? " (address in use, or not a host:port?)"
            : " (address in use, not a host:port, or a TLS certificate and key gRPC cannot "
              "use? see its log above)"));
  }
  std::unique_ptr<Server> server(new Server(std::move(impl)));
  server->SetReady(false);
  return server;
}

int Server::port() const { return impl_->port; }

void Server::Attach(engine::Engine& engine) {
  impl_->service->Attach(engine);
  SetReady(true);
}

void Server::SetReady(bool ready) {
  if (grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus(kServiceName, ready);
  }
}

void Server::MarkLost(const absl::Status& why) { impl_->service->MarkLost(why); }

void Server::Shutdown(double grace_seconds) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  SetReady(false);
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000)));
}

void Server::Wait() { impl_->server->Wait(); }

}  // namespace headwise::service
