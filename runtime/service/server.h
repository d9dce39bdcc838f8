// The gRPC front of a headwise job, on rank 0 (DESIGN.md "service/"): the
// headwise.v1.Inference service over an Engine, grpc.health.v1 (""
// liveness; "headwise.v1.Inference" readiness, NOT_SERVING until SetReady,
// while draining and after a rank is lost) and server reflection. Errors are
// gRPC statuses with the engine's codes; a cancelled or expired request
// stops at the next prefill chunk or token and leaves sessions unchanged.
// gRPC stays out of this header.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace headwise::service {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  int max_threads = 8;                     // concurrent RPCs being handled
};

class Server {
 public:
  // Binds and starts serving health and reflection; Inference RPCs are
  // UNAVAILABLE ("loading") and readiness NOT_SERVING until Attach.
  // Unavailable when the address cannot be bound.
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
