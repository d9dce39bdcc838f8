// `headwise ask`, `headwise status`, `headwise close`: clients of a running
// server (launcher/client.h does the RPCs).
#include "launcher/client.h"
#include "launcher/commands.h"
#include "launcher/options.h"
#include "launcher/runtime_setup.h"

namespace headwise::launcher {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

void AddSampling(CLI::App& cmd, RemoteSampling& s) {
  cmd.add_option("-n,--max-tokens", s.max_tokens, "Tokens to generate")->capture_default_str();
  cmd.add_option("--temp", s.temperature, "Sampling temperature; 0 is greedy")
      ->capture_default_str();
  cmd.add_option("--top-k", s.top_k, "Keep the k most likely tokens (0: off)");
  cmd.add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)");
  cmd.add_option("--min-p", s.min_p, "Drop tokens below min-p x the top probability");
  cmd.add_option("--repeat-penalty", s.repetition_penalty, "Repetition penalty (1: off)");
  cmd.add_option("--seed", s.seed, "Sampling seed");
  cmd.add_option("--stop", s.stop, "Stop string (repeatable)");
  cmd.add_flag("--ignore-eos", s.ignore_eos, "Keep generating past end-of-generation tokens");
}

}  // namespace

void AddConnectionOptions(CLI::App& cmd, Connection& connection) {
  cmd.add_flag("--tls", connection.tls, "Connect over TLS, trusting the system's roots");
  cmd.add_option("--tls-ca", connection.tls_ca,
                 "Connect over TLS, trusting this PEM file (e.g. a self-signed server's cert)");
  cmd.add_option("--auth-token-file", connection.auth_token_file,
                 "Send the bearer token on this file's first line (the server's "
                 "--auth-token-file)");
}

void RegisterClientCommands(CLI::App& app, CommandRunner& run) {
  auto ask = std::make_shared<AskRequest>();
  ask->connection.server = kDefaultServer;
  CLI::App* cmd = app.add_subcommand(
      "ask", "Ask a question about a document (--file) or an open session (--session)");
  cmd->add_option("--server", ask->connection.server, "headwise server host:port")
      ->capture_default_str();
  AddConnectionOptions(*cmd, ask->connection);
  auto* file = cmd->add_option("-f,--file", ask->file,
                               "Document to open a session on (streamed; closed afterwards "
                               "unless --keep-session)");
  auto* server_file = cmd->add_option("--server-file", ask->server_file,
                                      "Document path under the server's --context-dir");
  auto* session = cmd->add_option("--session", ask->session, "An open session's id");
  file->excludes(session)->excludes(server_file);
  session->excludes(server_file);
  cmd->add_flag("--keep-session", ask->keep_session,
                "Leave the session open and print its id (with --file)");
  cmd->add_option("--timeout", ask->timeout_seconds, "Deadline of the question in seconds");
  AddSampling(*cmd, *ask);
  auto attention = std::make_shared<PolicyFlags>();
  AddPolicyOptions(*cmd, *attention);
  cmd->add_option("question", ask->question, "The question")->required();
  AddEnvTwins(*cmd);
  cmd->callback([ask, attention, file, session, server_file, &run] {
    if (file->count() + session->count() + server_file->count() == 0) {
      throw CLI::RequiredError("--file, --server-file or --session");
    }
    run = [ask, attention] {
      if (attention->given) {
        if (!ask->session.empty()) {
          return Fail("ask", absl::InvalidArgumentError(
                                 "--policy names a new session's policy; an open session keeps "
                                 "the one it was opened with"));
        }
        absl::StatusOr<kv::AttentionPolicy> policy = PolicyFromFlags(*attention);
        if (!policy.ok()) return Fail("ask", policy.status());
        ask->policy = *policy;
      }
      return RunAsk(*ask);
    };
  });

  struct StatusFlags {
    Connection connection;
    bool wait = false;
    double wait_seconds = 60;
  };
  auto status = std::make_shared<StatusFlags>();
  status->connection.server = kDefaultServer;
  CLI::App* st = app.add_subcommand(
      "status", "A server's readiness, model, sessions and every rank's KV and traffic");
  st->add_option("--server", status->connection.server, "headwise server host:port")
      ->capture_default_str();
  AddConnectionOptions(*st, status->connection);
  st->add_flag("--wait", status->wait, "Wait until the server is ready (exit 1 if not)");
  st->add_option("--wait-seconds", status->wait_seconds, "How long --wait waits")
      ->capture_default_str();
  AddEnvTwins(*st);
  st->callback([status, &run] {
    run = [status] { return RunStatus(status->connection, status->wait, status->wait_seconds); };
  });

  struct CloseFlags {
    Connection connection;
    std::string session;
    bool persist = false;
  };
  auto close = std::make_shared<CloseFlags>();
  close->connection.server = kDefaultServer;
  CLI::App* cl = app.add_subcommand("close", "Close an open session");
  cl->add_option("--server", close->connection.server, "headwise server host:port")
      ->capture_default_str();
  AddConnectionOptions(*cl, close->connection);
  cl->add_option("session", close->session, "The session's id")->required();
  cl->add_flag("--persist", close->persist,
               "Save the session first (the server's --snapshot-dir); `serve --restore` brings "
               "it back");
  AddEnvTwins(*cl);
  cl->callback([close, &run] {
    run = [close] { return RunCloseSession(close->connection, close->session, close->persist); };
  });
}

}  // namespace headwise::launcher
