// The gRPC front of a headwise job, on rank 0 (DESIGN.md "service/"): the
// headwise.v1.Inference service over an Engine, grpc.health.v1 (""
// liveness; "headwise.v1.Inference" readiness, NOT_SERVING until SetReady,
// while draining and after a rank is lost) and server reflection. Errors are
// gRPC statuses with the engine's codes; a cancelled or expired request
// stops at the next prefill chunk or token and leaves sessions unchanged.
// Optional TLS and a bearer token guard everything but health (README
// "Serving"). gRPC stays out of this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace headwise::v1 {
class AskRequest;
class GenerateRequest;
class OpenSessionRequest;
class Policy;
class SamplingParams;
}  // namespace headwise::v1

namespace headwise::service {

// Request validation as the RPC handlers run it, before any engine work. Pure
// functions of the messages (no server, engine or gRPC context), so unit tests
// and fuzz/request_fuzzer.cc reach exactly the handlers' checks. Errors are
// InvalidArgument.

// A request's attention policy: an empty name is the server's (nullopt);
// else exact, hybrid or quantkv with params budget (hybrid: fraction
// attended; quantkv: of the KV kept; kv_budget is its alias), token_top_k
// and pool_heads (0 or 1; hybrid), tau, top_k, key_bits, window, sinks, each
// a number, and summary (hybrid: keys or bounds); unset knobs take
// kv::AttentionPolicy's defaults.
absl::StatusOr<std::optional<kv::AttentionPolicy>> PolicyFrom(const v1::Policy& policy);

// Sampling fields and policy -> engine options; proto3 zeros mean "default".
// check_cancel is left empty for the caller to set.
absl::StatusOr<engine::RequestOptions> RequestOptionsFrom(const v1::SamplingParams& sampling,
                                                          const v1::Policy& policy);

// A Generate request: its sampling and policy, then its input, which must be
// set: chat messages each with a role (at least one message), or token ids
// inside [0, vocab_size). Returns the engine options, as RequestOptionsFrom.
absl::StatusOr<engine::RequestOptions> ValidateGenerateRequest(const v1::GenerateRequest& request,
                                                               int64_t vocab_size);

// An Ask request's sampling (the session and question are the engine's to check).
absl::StatusOr<engine::RequestOptions> ValidateAskRequest(const v1::AskRequest& request);

// The context of an OpenSession stream, assembled one message at a time: one
// context_path, or context chunks concatenated in order, never both; only the
// exact policy. Not thread-safe.
class OpenSessionContext {
 public:
  // Reads a context_path (in the server: Engine::ReadContextFile); its error
  // is returned as is.
  using FileReader = std::function<absl::StatusOr<std::string>(const std::string& path)>;
  explicit OpenSessionContext(FileReader read_file) : read_file_(std::move(read_file)) {}

  // Adds one message of the stream. After an error the RPC fails with it.
  absl::Status Add(const v1::OpenSessionRequest& part);
  // The context so far, and the policy the stream named (the last one).
  std::string& text() { return text_; }
  const std::optional<kv::AttentionPolicy>& policy() const { return policy_; }

 private:
  FileReader read_file_;
  std::string text_;
  std::optional<kv::AttentionPolicy> policy_;
  bool from_path_ = false;
};

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  int max_threads = 8;                     // concurrent RPCs being handled
  // TLS: the PEM certificate chain and its private key, both or neither
  // (InvalidArgument otherwise). Without them the port speaks plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Non-empty: every call but grpc.health.v1 (so headwise.v1.Inference and
  // reflection) must carry `authorization: Bearer <auth_token>` metadata or
  // fails UNAUTHENTICATED before it reaches a handler (streams before their
  // first message). Without TLS only loopback peers can connect, since a
  // plaintext token must not cross a network.
  std::string auth_token;
};

class Server {
 public:
  // Binds and starts serving health and reflection; Inference RPCs are
  // UNAVAILABLE ("loading") and readiness NOT_SERVING until Attach.
  // Unavailable when the address cannot be bound (or gRPC rejects the TLS
  // certificate or key).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  int port() const;
  // Serves `engine` (which must outlive the server) and turns ready.
  void Attach(engine::Engine& engine);
  // Readiness of headwise.v1.Inference in grpc.health.v1.
  void SetReady(bool ready);
  // A lost rank: readiness goes NOT_SERVING and requests fail UNAVAILABLE.
  void MarkLost(const absl::Status& why);
  // Stops accepting RPCs, waits up to `grace_seconds` for running ones,
  // then cancels them.
  void Shutdown(double grace_seconds);
  // Blocks until Shutdown.
  void Wait();

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace headwise::service
