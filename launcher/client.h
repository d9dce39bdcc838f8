// The gRPC clients of a headwise server: `generate --server`, `ask` and
// `status`. Text streams to stdout as it arrives; progress and figures go to
// stderr; a failed RPC prints its status code and message and exits 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace headwise::launcher {

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
};

struct RemoteGenerateRequest : RemoteSampling {
  std::string server;
  std::string prompt;
  std::string system;
  bool chat = false;
  std::string stats_json;  // the final message's stats, as JSON
};
int RunRemoteGenerate(const RemoteGenerateRequest& request);

struct AskRequest : RemoteSampling {
  std::string server;
  std::string file;         // a document to open a session on (streamed), or
  std::string server_file;  // a path under the server's --context-dir, or
  std::string session;      // an open session
  std::string question;
  bool keep_session = false;   // with --file: leave the session open, print its id
  double timeout_seconds = 0;  // 0: no deadline
};
int RunAsk(const AskRequest& request);

// Readiness, the model, sessions and every rank's figures.
int RunStatus(const std::string& server, bool wait_ready, double wait_seconds);

// CloseSession.
int RunCloseSession(const std::string& server, const std::string& session, bool persist = false);

}  // namespace headwise::launcher
