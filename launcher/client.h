// The gRPC clients of a headwise server: `generate --server`, `ask` and
// `status`. Text streams to stdout as it arrives; progress and figures go to
// stderr; a failed RPC prints its status code and message and exits 1.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv/kv_store.h"

namespace CLI {
class App;
}

namespace headwise::launcher {

// Where a client connects and how: plaintext unless `tls` or `tls_ca`; with
// `auth_token_file` every RPC carries `authorization: Bearer <token>`.
struct Connection {
  std::string server;           // host:port
  bool tls = false;             // TLS, trusting the system's roots
  std::string tls_ca;           // TLS, trusting this PEM file (a self-signed server)
  std::string auth_token_file;  // the server's token (ReadTokenFile)
};

// --tls, --tls-ca, --auth-token-file (--server is each command's own).
void AddConnectionOptions(CLI::App& cmd, Connection& connection);

// The credential files `serve` and the clients read. A token file holds the
// token on its first line (surrounding whitespace dropped); empty is
// InvalidArgument. A PEM file must hold a -----BEGIN block. Errors name
// `flag` and the file.
absl::StatusOr<std::string> ReadTokenFile(std::string_view flag, const std::string& path);
absl::StatusOr<std::string> ReadPemFile(std::string_view flag, const std::string& path);

struct RemoteSampling {
  int32_t max_tokens = 128;
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 1;
  float min_p = 0;
  float repetition_penalty = 1;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // The attention policy of the new sequence (generate, ask --file); unset:
  // the server's.
  std::optional<kv::AttentionPolicy> policy;
};

struct RemoteGenerateRequest : RemoteSampling {
  Connection connection;
  std::string prompt;
  std::string system;
  bool chat = false;
  std::string stats_json;  // the final message's stats, as JSON
};
int RunRemoteGenerate(const RemoteGenerateRequest& request);

struct AskRequest : RemoteSampling {
  Connection connection;
  std::string file;         // a document to open a session on (streamed), or
  std::string server_file;  // a path under the server's --context-dir, or
  std::string session;      // an open session
  std::string question;
  bool keep_session = false;   // with --file: leave the session open, print its id
  double timeout_seconds = 0;  // 0: no deadline
};
int RunAsk(const AskRequest& request);

// Readiness, the model, sessions and every rank's figures.
// The health check needs no token; the rest does when the server has one.
int RunStatus(const Connection& connection, bool wait_ready, double wait_seconds);

// CloseSession.
int RunCloseSession(const Connection& connection, const std::string& session, bool persist = false);

}  // namespace headwise::launcher
