// Blocking gRPC stubs over a plaintext channel (the server binds 127.0.0.1
// unless told otherwise) or TLS; the bearer token rides in each call's
// metadata, since gRPC sends call credentials over TLS only and a token
// server without TLS takes loopback peers. The prefill progress bar redraws
// one stderr line.
#include "launcher/client.h"

#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "headwise/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace headwise::launcher {
namespace {

namespace v1 = ::headwise::v1;

int Fail(const char* command, const grpc::Status& status) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  std::cerr << "headwise " << command << ": " << (code >= 0 && code <= 16 ? kNames[code] : "?")
            << ": " << status.error_message() << "\n";
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    std::cerr << "headwise " << command
              << ": give the server's token with --auth-token-file (or HEADWISE_AUTH_TOKEN_FILE)\n";
  }
  return 1;
}

int Fail(const char* command, const absl::Status& status) {
  return Fail(command, grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                                    std::string(status.message())));
}

// A channel and the token its calls carry.
struct Link {
  std::shared_ptr<grpc::Channel> channel;
  std::string authorization;  // "Bearer <token>", or empty

  // Call before the RPC starts.
  void Sign(grpc::ClientContext& context) const {
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  }
};

absl::StatusOr<Link> Connect(const Connection& connection) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (connection.tls || !connection.tls_ca.empty()) {
    grpc::SslCredentialsOptions tls;  // empty roots: the system's
    if (!connection.tls_ca.empty()) {
      absl::StatusOr<std::string> roots = ReadPemFile("--tls-ca", connection.tls_ca);
      if (!roots.ok()) return roots.status();
      tls.pem_root_certs = std::move(*roots);
    }
    credentials = grpc::SslCredentials(tls);
  }
  Link link;
  if (!connection.auth_token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadTokenFile("--auth-token-file", connection.auth_token_file);
    if (!token.ok()) return token.status();
    link.authorization = "Bearer " + *token;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  link.channel = grpc::CreateCustomChannel(connection.server, credentials, args);
  return link;
}

absl::StatusOr<std::string> ReadWholeFile(std::string_view flag, const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("cannot read the ", std::string(flag), " file ", path,
                                            ": ", error ? error.message() : "not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) {
    return absl::PermissionDeniedError(absl::StrCat("cannot read the ", std::string(flag), " file ",
                                                    path, ": ", std::string(std::strerror(errno))));
  }
  return text.str();
}

void FillSampling(const RemoteSampling& r, v1::SamplingParams* s) {
  s->set_max_tokens(static_cast<uint32_t>(r.max_tokens));
  s->set_temperature(r.temperature);
  s->set_top_k(static_cast<uint32_t>(r.top_k));
  s->set_top_p(r.top_p);
  s->set_min_p(r.min_p);
  s->set_repetition_penalty(r.repetition_penalty);
  s->set_seed(r.seed);
  for (const std::string& stop : r.stop) s->add_stop(stop);
  s->set_ignore_eos(r.ignore_eos);
}

// The policy and every knob it reads (the server validates them again).
void FillPolicy(const std::optional<kv::AttentionPolicy>& policy, v1::Policy* out) {
  if (!policy) return;
  out->set_name(policy->Name());
  auto& params = *out->mutable_params();
  using Kind = kv::AttentionPolicy::Kind;
  if (policy->kind == Kind::kExact) return;
  params["budget"] = absl::StrCat(policy->budget);
  params["window"] = absl::StrCat(policy->window_tokens);
  params["sinks"] = absl::StrCat(policy->sink_tokens);
  if (policy->kind == Kind::kHybrid) {
    params["summary"] = kv::BlockSummaryName(policy->summary);
    if (policy->pool_heads) params["pool_heads"] = "1";
    if (policy->token_top_k > 0) params["token_top_k"] = absl::StrCat(policy->token_top_k);
  }
  if (policy->kind == Kind::kQuantKv) {
    params["tau"] = absl::StrCat(policy->tau);
    params["top_k"] = absl::StrCat(policy->top_k);
  }
  if (policy->NeedsKeys()) params["key_bits"] = absl::StrCat(policy->key_bits);
}

nlohmann::json StatsJson(const v1::GenerateResponse::Final& final) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const v1::RankStats& rank : final.stats().ranks()) {
    nlohmann::json tiers = nlohmann::json::object();
    for (const auto& [name, tier] : rank.tiers()) {
      tiers[name] = {{"used_bytes", tier.used_bytes()},
                     {"peak_bytes", tier.peak_bytes()},
                     {"budget_bytes", tier.budget_bytes()}};
      if (name == "disk") {
        tiers[name]["bytes_read"] = tier.bytes_read();
        tiers[name]["read_gbps"] = tier.read_gbps();
      }
    }
    ranks.push_back({{"rank", rank.rank()},
                     {"tiers", tiers},
                     {"bytes_sent", rank.bytes_sent()},
                     {"bytes_received", rank.bytes_received()}});
  }
  std::vector<int32_t> ids(final.generated_token_ids().begin(), final.generated_token_ids().end());
  static const char* kReasons[] = {"unspecified", "stop", "length", "cancelled"};
  return {{"prompt_tokens", final.usage().prompt_tokens()},
          {"generated_token_ids", ids},
          {"finish_reason", kReasons[final.finish_reason() & 3]},
          {"prefill_tokens_per_s", final.stats().prefill_tokens_per_s()},
          {"decode_tokens_per_s", final.stats().decode_tokens_per_s()},
          {"policy", final.stats().policy()},
          {"ranks", ranks}};
}

// Streams text deltas to stdout; returns the final message's status.
grpc::Status StreamAnswer(grpc::ClientReaderInterface<v1::GenerateResponse>& reader,
                          v1::GenerateResponse::Final* final, std::string* text) {
  v1::GenerateResponse response;
  while (reader.Read(&response)) {
    if (response.has_final()) {
      *final = response.final();
    } else {
      std::cout << response.text_delta() << std::flush;
      text->append(response.text_delta());
    }
  }
  std::cout << "\n" << std::flush;
  return reader.Finish();
}

void PrintFigures(const v1::GenerateResponse::Final& final) {
  std::fprintf(stderr, "tokens: %u prompt, %u generated | prefill %.1f tok/s, decode %.1f tok/s\n",
               final.usage().prompt_tokens(), final.usage().completion_tokens(),
               final.stats().prefill_tokens_per_s(), final.stats().decode_tokens_per_s());
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(std::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(flag, path);
  if (!text.ok()) return text.status();
  const std::string token(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " file ", path,
                                                   " is empty (the token goes on its first line)"));
  }
  for (char c : token) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(flag), " file ", path,
                       ": the token must be printable ASCII (it travels as an HTTP/2 header)"));
    }
  }
  return token;
}

absl::StatusOr<std::string> ReadPemFile(std::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(flag, path);
  if (!text.ok()) return text.status();
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(flag), " file ", path, " is not PEM (no -----BEGIN line)"));
  }
  return text;
}

int RunRemoteGenerate(const RemoteGenerateRequest& r) {
  absl::StatusOr<Link> link = Connect(r.connection);
  if (!link.ok()) return Fail("generate", link.status());
  auto stub = v1::Inference::NewStub(link->channel);
  v1::GenerateRequest request;
  if (r.chat) {
    v1::ChatMessages* chat = request.mutable_chat();
    if (!r.system.empty()) {
      v1::ChatMessage* m = chat->add_messages();
      m->set_role("system");
      m->set_content(r.system);
    }
    v1::ChatMessage* m = chat->add_messages();
    m->set_role("user");
    m->set_content(r.prompt);
  } else {
    request.set_text(r.prompt);
  }
  FillSampling(r, request.mutable_sampling());
  FillPolicy(r.policy, request.mutable_policy());
  grpc::ClientContext context;
  link->Sign(context);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  v1::GenerateResponse::Final final;
  std::string text;
  const grpc::Status status = StreamAnswer(*reader, &final, &text);
  if (!status.ok()) return Fail("generate", status);
  PrintFigures(final);
  if (!r.stats_json.empty()) {
    nlohmann::json stats = StatsJson(final);
    stats["text"] = text;
    std::ofstream out(r.stats_json);
    out << stats.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

int RunAsk(const AskRequest& r) {
  absl::StatusOr<Link> link = Connect(r.connection);
  if (!link.ok()) return Fail("ask", link.status());
  auto stub = v1::Inference::NewStub(link->channel);
  std::string session = r.session;
  if (session.empty()) {
    std::string document;
    if (!r.file.empty()) {
      std::ifstream in(r.file, std::ios::binary);
      if (!in) {
        std::cerr << "headwise ask: cannot read " << r.file << "\n";
        return 1;
      }
      std::ostringstream text;
      text << in.rdbuf();
      document = text.str();
    }
    grpc::ClientContext context;
    link->Sign(context);
    auto stream = stub->OpenSession(&context);
    constexpr size_t kChunk = size_t{1} << 20;
    if (r.policy) {
      v1::OpenSessionRequest part;
      FillPolicy(r.policy, part.mutable_policy());
      stream->Write(part);
    }
    if (!r.server_file.empty()) {
      v1::OpenSessionRequest part;
      part.set_context_path(r.server_file);
      stream->Write(part);
    }
    for (size_t at = 0; at < document.size(); at += kChunk) {
      v1::OpenSessionRequest part;
      part.set_context_chunk(document.substr(at, kChunk));
      if (!stream->Write(part)) break;
    }
    stream->WritesDone();
    v1::OpenSessionResponse response;
    const auto start = std::chrono::steady_clock::now();
    while (stream->Read(&response)) {
      if (response.has_progress()) {
        const v1::PrefillProgress& p = response.progress();
        const double percent =
            100.0 * p.processed_tokens() / std::max<uint64_t>(1, p.total_tokens());
        const int filled = static_cast<int>(percent / 5);
        std::string tiers;
        for (const auto& [tier, bytes] : p.bytes_per_tier()) {
          if (bytes > 0) tiers += " " + tier + " " + std::to_string(bytes >> 20) + " MiB";
        }
        std::fprintf(
            stderr, "\rprefill [%-20s] %llu/%llu tokens (%.0f%%), %.0f tok/s, eta %.0f s,%s ",
            std::string(filled, '#').c_str(), static_cast<unsigned long long>(p.processed_tokens()),
            static_cast<unsigned long long>(p.total_tokens()), percent, p.tokens_per_s(), p.eta_s(),
            tiers.c_str());
      } else {
        session = response.session_id();
      }
    }
    const grpc::Status status = stream->Finish();
    if (!status.ok()) {
      std::fprintf(stderr, "\n");
      return Fail("ask", status);
    }
    std::fprintf(stderr, "\rprefill done in %.1f s%40s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 "");
  }
  v1::AskRequest ask;
  ask.set_session_id(session);
  ask.set_question(r.question);
  FillSampling(r, ask.mutable_sampling());
  grpc::ClientContext context;
  link->Sign(context);
  if (r.timeout_seconds > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(r.timeout_seconds * 1000)));
  }
  auto reader = stub->Ask(&context, ask);
  v1::GenerateResponse::Final final;
  std::string text;
  const grpc::Status status = StreamAnswer(*reader, &final, &text);
  int code = 0;
  if (!status.ok()) {
    code = Fail("ask", status);
  } else {
    PrintFigures(final);
  }
  if (r.session.empty()) {
    if (r.keep_session) {
      std::fprintf(stderr, "session: %s\n", session.c_str());
    } else if (!session.empty()) {
      code = std::max(code, RunCloseSession(r.connection, session));
    }
  }
  return code;
}

int RunCloseSession(const Connection& connection, const std::string& session, bool persist) {
  absl::StatusOr<Link> link = Connect(connection);
  if (!link.ok()) return Fail("close", link.status());
  auto stub = v1::Inference::NewStub(link->channel);
  grpc::ClientContext context;
  link->Sign(context);
  v1::CloseSessionRequest request;
  request.set_session_id(session);
  request.set_persist(persist);
  v1::CloseSessionResponse response;
  const grpc::Status status = stub->CloseSession(&context, request, &response);
  return status.ok() ? 0 : Fail("close", status);
}

int RunStatus(const Connection& connection, bool wait_ready, double wait_seconds) {
  absl::StatusOr<Link> link = Connect(connection);
  if (!link.ok()) return Fail("status", link.status());
  const std::string& server = connection.server;
  std::shared_ptr<grpc::Channel> channel = link->channel;
  auto health = grpc::health::v1::Health::NewStub(channel);
  const auto give_up =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(std::max(0.0, wait_seconds) * 1000));
  grpc::health::v1::HealthCheckResponse ready;
  grpc::Status status;
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("headwise.v1.Inference");
    status = health->Check(&context, request, &ready);
    const bool serving =
        status.ok() && ready.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || !wait_ready || std::chrono::steady_clock::now() >= give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!status.ok()) return Fail("status", status);
  const bool serving = ready.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::printf("%s: %s\n", server.c_str(), serving ? "SERVING" : "NOT_SERVING");
  if (!serving) return wait_ready ? 1 : 0;

  auto stub = v1::Inference::NewStub(channel);
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    link->Sign(context);
    status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return Fail("status", status);
  }
  std::printf("model: %s (%s), %u layers, %u/%u heads, max context %llu tokens, KV %llu B/token\n",
              info.name().c_str(), info.architecture().c_str(), info.n_layers(), info.n_heads(),
              info.n_kv_heads(), static_cast<unsigned long long>(info.max_context_tokens()),
              static_cast<unsigned long long>(info.kv_bytes_per_token()));
  v1::ListSessionsResponse sessions;
  {
    grpc::ClientContext context;
    link->Sign(context);
    status = stub->ListSessions(&context, v1::ListSessionsRequest(), &sessions);
    if (!status.ok()) return Fail("status", status);
  }
  for (const v1::SessionInfo& s : sessions.sessions()) {
    std::printf("session %s: %llu context tokens, policy %s\n", s.session_id().c_str(),
                static_cast<unsigned long long>(s.context_tokens()), s.policy().c_str());
  }
  v1::ClusterStats cluster;
  {
    grpc::ClientContext context;
    link->Sign(context);
    status = stub->GetClusterStats(&context, v1::GetClusterStatsRequest(), &cluster);
    if (!status.ok()) return Fail("status", status);
  }
  for (const v1::RankStats& rank : cluster.ranks()) {
    const auto host = rank.tiers().find("host");
    const double used = host == rank.tiers().end() ? 0 : host->second.used_bytes() / 1048576.0;
    const double peak = host == rank.tiers().end() ? 0 : host->second.peak_bytes() / 1048576.0;
    std::string work;
    if (rank.attention_seconds() > 0) {
      char text[96];
      std::snprintf(text, sizeof(text), ", attended %.1f MiB in %.2f s (%.2f GB/s)",
                    rank.attention_bytes() / 1048576.0, rank.attention_seconds(),
                    rank.attention_bytes() / rank.attention_seconds() / 1e9);
      work = text;
    }
    std::string disk;
    if (const auto d = rank.tiers().find("disk"); d != rank.tiers().end()) {
      char text[128];
      std::snprintf(text, sizeof(text),
                    ", disk KV %.1f MiB (peak %.1f MiB, read %.1f MiB at %.2f GB/s)",
                    d->second.used_bytes() / 1048576.0, d->second.peak_bytes() / 1048576.0,
                    d->second.bytes_read() / 1048576.0, d->second.read_gbps());
      disk = text;
    }
    std::printf(
        "rank %d (%s): host KV %.1f MiB (peak %.1f MiB)%s, sent %.1f MiB, received %.1f MiB, "
        "%llu requests, %llu errors%s\n",
        rank.rank(), rank.hostname().c_str(), used, peak, disk.c_str(),
        rank.bytes_sent() / 1048576.0, rank.bytes_received() / 1048576.0,
        static_cast<unsigned long long>(rank.requests()),
        static_cast<unsigned long long>(rank.errors()), work.c_str());
  }
  return 0;
}

}  // namespace headwise::launcher
