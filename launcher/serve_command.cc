// `headwise serve`: every rank of the job runs it (mpirun/srun, or alone);
// rank 0 loads the model and serves gRPC on --listen, the others are memory
// ranks. Health and reflection answer while the model loads (readiness
// NOT_SERVING). SIGINT/SIGTERM drain: readiness goes NOT_SERVING, running
// requests get --drain seconds, memory ranks are stopped, the job ends.
// --tls-cert/--tls-key and --auth-token-file guard the endpoint; the
// inter-rank network is trusted like MPI's (README "Serving").
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "launcher/client.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "launcher/runtime_setup.h"
#include "runtime/attention/remote.h"
#include "runtime/engine/engine.h"
#include "runtime/model/llama.h"
#include "runtime/model/tokenizer.h"
#include "runtime/service/server.h"

namespace headwise::launcher {
namespace {

struct ServeFlags {
  RuntimeFlags runtime;
  std::string listen = "127.0.0.1:50051";
  std::string context_dir;
  std::string snapshot_dir;
  bool restore = false;
  int32_t max_queue = 16;
  double drain = 5;
  std::string tls_cert;
  std::string tls_key;
  std::string auth_token_file;
};

int Fail(const absl::Status& status) { return launcher::Fail("serve", status); }

int g_stop_pipe[2] = {-1, -1};

// Loopback or a unix socket: where a token may travel without TLS.
bool IsLocalAddress(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

// The flag pairs every rank checks alike before the job starts; the files
// are read on rank 0 only (memory ranks may not have them).
absl::Status CheckSecurityFlags(const ServeFlags& flags) {
  if (!flags.tls_cert.empty() && flags.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-key (the certificate's private key)");
  }
  if (flags.tls_cert.empty() && !flags.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-key needs --tls-cert (the certificate it belongs to)");
  }
  if (!flags.auth_token_file.empty() && flags.tls_cert.empty() && !IsLocalAddress(flags.listen)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth-token-file on ", flags.listen,
                     " needs --tls-cert/--tls-key: without TLS the token would cross the network "
                     "in plaintext (only a loopback --listen may go without)"));
  }
  return absl::OkStatus();
}

absl::Status ReadSecurityFiles(const ServeFlags& flags, service::ServerOptions& options) {
  if (!flags.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile("--tls-cert", flags.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("--tls-key", flags.tls_key);
    if (!key.ok()) return key.status();
    options.tls_cert_pem = std::move(*cert);
    options.tls_key_pem = std::move(*key);
  }
  if (!flags.auth_token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile("--auth-token-file", flags.auth_token_file);
    if (!token.ok()) return token.status();
    options.auth_token = std::move(*token);
  }
  return absl::OkStatus();
}

std::string Gib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GiB", bytes / double(int64_t{1} << 30));
  return text;
}

int RunServe(const ServeFlags& flags) {
  // SIGINT/SIGTERM write their number into a pipe that a waiting thread
  // reads (a handler may run on any thread, including ones libraries start).
  if (pipe(g_stop_pipe) != 0) return Fail(absl::InternalError("pipe() failed"));
  struct sigaction action = {};
  action.sa_handler = [](int signal) {
    const char byte = static_cast<char>(signal);
    (void)!write(g_stop_pipe[1], &byte, 1);
  };
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  // Flag checks every rank makes before the job starts (a rank failing
  // alone later would leave the others waiting).
  if (absl::Status s = CheckSecurityFlags(flags); !s.ok()) return Fail(s);
  if (flags.restore && flags.snapshot_dir.empty()) {
    return Fail(absl::InvalidArgumentError("--restore needs --snapshot-dir"));
  }
  absl::StatusOr<Runtime> started = StartRuntime(flags.runtime, "serve");
  if (!started.ok()) return Fail(started.status());
  Runtime& rt = *started;
  if (rt.memory_rank()) return rt.cluster->ServeMemoryRank(flags.runtime.threads);
  auto fail = [&rt](const absl::Status& status) { return rt.FailJob("serve", status); };

  service::ServerOptions server_options;
  server_options.listen = flags.listen;
  if (absl::Status s = ReadSecurityFiles(flags, server_options); !s.ok()) return fail(s);
  absl::StatusOr<std::unique_ptr<service::Server>> server = service::Server::Start(server_options);
  if (!server.ok()) return fail(server.status());
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  std::fprintf(stderr, "headwise serve: listening on %s:%d (port %d), loading %s\n", host.c_str(),
               (*server)->port(), (*server)->port(), flags.runtime.model.c_str());

  absl::StatusOr<std::unique_ptr<model::LlamaModel>> llm =
      model::LlamaModel::Load(flags.runtime.model, rt.pool.get());
  if (!llm.ok()) return fail(llm.status());
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromGguf((*llm)->file());
  if (!tokenizer.ok()) return fail(tokenizer.status());

  engine::EngineOptions engine_options;
  engine_options.base = rt.base;
  engine_options.max_queued = flags.max_queue;
  engine_options.context_dir = flags.context_dir;
  engine_options.snapshot_dir = flags.snapshot_dir;
  engine::Engine engine(**llm, *tokenizer, engine_options);
  if (flags.restore) {
    absl::StatusOr<std::vector<engine::SessionInfo>> restored = engine.RestoreSessions();
    if (!restored.ok()) return fail(restored.status());
    for (const engine::SessionInfo& session : *restored) {
      std::fprintf(stderr, "headwise serve: restored session %s (%lld tokens)\n",
                   session.id.c_str(), static_cast<long long>(session.context_tokens));
    }
    if (restored->empty()) {
      std::fprintf(stderr, "headwise serve: no sessions to restore in %s\n",
                   flags.snapshot_dir.c_str());
    }
  }

  const model::ModelInfo& info = (*llm)->info();
  const int64_t token_bytes =
      (*llm)->KvGeometryFor(rt.base.kv_block, rt.base.kv_dtype).TokenBytes();
  const int world = rt.cluster != nullptr ? rt.cluster->transport().size() : 1;
  std::fprintf(
      stderr,
      "headwise serve: model %s (%s, %d layers, %d/%d heads), device %s, KV %s in "
      "%d-token blocks (%lld B/token)\n"
      "  ranks %d, placement %s, mode %s, peer timeout %.0f s, host pool %s per rank, "
      "disk tier %s per rank%s%s, queue %d, context dir %s, snapshot dir %s, tls %s, auth "
      "token %s\n"
      "  default policy %s (requests may name another)\n"
      "  KV capacity: %lld tokens\n",
      info.name.c_str(), info.architecture.c_str(), int(info.n_layers), int(info.n_heads),
      int(info.n_kv_heads), flags.runtime.device.c_str(), flags.runtime.kv_dtype.c_str(),
      rt.base.kv_block, static_cast<long long>(token_bytes), world, flags.runtime.placement.c_str(),
      flags.runtime.mode.c_str(), flags.runtime.peer_timeout,
      rt.base.host_budget_bytes == 0 ? "unlimited" : Gib(rt.base.host_budget_bytes).c_str(),
      rt.base.disk.bytes == 0 ? "none" : Gib(rt.base.disk.bytes).c_str(),
      rt.base.disk.bytes == 0 ? "" : " in ", rt.base.disk.dir.c_str(), flags.max_queue,
      flags.context_dir.empty() ? "(none)" : flags.context_dir.c_str(),
      flags.snapshot_dir.empty() ? "(none)" : flags.snapshot_dir.c_str(),
      flags.tls_cert.empty() ? "off" : "on", flags.auth_token_file.empty() ? "off" : "on",
      rt.base.policy.Describe().c_str(), static_cast<long long>(engine.MaxContextTokens()));
  (*server)->Attach(engine);
  std::fprintf(stderr, "headwise serve: ready\n");

  std::thread stopper([&] {
    char signal = 0;
    while (read(g_stop_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    std::fprintf(stderr, "headwise serve: %s, draining for up to %.0f s\n",
                 signal == SIGINT ? "SIGINT" : "SIGTERM", flags.drain);
    (*server)->Shutdown(flags.drain);
  });
  (*server)->Wait();
  stopper.join();
  if (rt.cluster != nullptr) {
    if (absl::Status s = rt.cluster->StopMemoryRanks(); !s.ok()) return fail(s);
  }
  std::fprintf(stderr, "headwise serve: stopped\n");
  return 0;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, CommandRunner& run) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve the gRPC API (every rank of the job runs it; rank 0 listens)");
  AddRuntimeOptions(*cmd, flags->runtime);
  cmd->add_option("--listen", flags->listen, "host:port rank 0 listens on (port 0: any free)")
      ->capture_default_str();
  cmd->add_option("--context-dir", flags->context_dir,
                  "Directory OpenSession may read context files from (default: none)");
  cmd->add_option("--snapshot-dir", flags->snapshot_dir,
                  "Directory persisted sessions are written to (close --persist) and restored "
                  "from (every rank writes its own blocks there; default: none)");
  cmd->add_flag("--restore", flags->restore,
                "Reopen the sessions persisted in --snapshot-dir before serving");
  cmd->add_option("--max-queue", flags->max_queue,
                  "Requests that may wait behind the running one before RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--drain", flags->drain,
                  "Seconds running requests get to finish on SIGINT/SIGTERM")
      ->capture_default_str();
  cmd->add_option("--tls-cert", flags->tls_cert,
                  "Serve TLS with this PEM certificate chain (needs --tls-key)");
  cmd->add_option("--tls-key", flags->tls_key, "The PEM private key of --tls-cert");
  cmd->add_option("--auth-token-file", flags->auth_token_file,
                  "Require `authorization: Bearer <token>` (the file's first line) on every RPC "
                  "but health checks; without TLS only on a loopback --listen");
  AddEnvTwins(*cmd);
  cmd->callback([flags, &run] { run = [flags] { return RunServe(*flags); }; });
}

}  // namespace headwise::launcher
