// `headwise launch`: starts a headwise job under mpirun — `--hosts h1:2,h2:1
// -np 3 -- serve ...` becomes the mpirun command that runs this same binary
// (/proc/self/exe) on every rank with the settings the ranks need (see
// mpirun_command.h). --dry-run prints that command; otherwise it is exec'd.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>

#include "absl/status/status.h"
#include "launcher/commands.h"
#include "launcher/mpirun_command.h"
#include "launcher/options.h"

extern char** environ;

namespace headwise::launcher {
namespace {

struct LaunchFlags {
  std::string hosts;
  std::string hostfile;
  int np = 0;
  bool dry_run = false;
  bool oversubscribe = false;
  std::string mpirun = "mpirun";
  std::string ucx_tls;
  std::string ucx_net_devices;
  std::vector<std::string> command;
  bool np_given = false;                // -np (or HEADWISE_NP) was set
  std::vector<std::string> unexpected;  // arguments before `--` CLI11 did not know
  std::set<std::string> own_env;        // HEADWISE_* twins of launch's own flags
};

// Bad usage: one line, exit 2 (as a shell builtin does).
int Usage(const absl::Status& status) {
  std::fprintf(stderr, "headwise launch: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 2;
}

int RunLaunch(const LaunchFlags& flags) {
  if (!flags.unexpected.empty()) {
    return Usage(absl::InvalidArgumentError("unexpected argument '" + flags.unexpected.front() +
                                            "': put the headwise command after `--` "
                                            "(headwise launch -np 3 -- serve ...)"));
  }
  if (!flags.np_given) {
    return Usage(absl::InvalidArgumentError("-np N is required: the number of ranks to start"));
  }
  LaunchSpec spec;
  if (!flags.hosts.empty()) {
    absl::StatusOr<std::vector<HostSlots>> hosts = ParseHosts(flags.hosts);
    if (!hosts.ok()) return Usage(hosts.status());
    spec.hosts = *std::move(hosts);
  }
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) {
    return Usage(absl::FailedPreconditionError("cannot read /proc/self/exe: " + error.message()));
  }
  spec.mpirun = flags.mpirun;
  spec.hostfile = flags.hostfile;
  spec.np = flags.np;
  spec.oversubscribe = flags.oversubscribe;
  spec.run_as_root = geteuid() == 0;
  spec.ucx_tls = flags.ucx_tls;
  spec.ucx_net_devices = flags.ucx_net_devices;
  for (std::string& name :
       ForwardedEnv(environ, !flags.ucx_tls.empty(), !flags.ucx_net_devices.empty())) {
    if (!flags.own_env.contains(name)) spec.forwarded_env.push_back(std::move(name));
  }
  spec.headwise = self.string();
  spec.command = flags.command;
  absl::StatusOr<std::vector<std::string>> argv = BuildMpirunArgv(spec);
  if (!argv.ok()) return Usage(argv.status());

  const std::string line = ShellJoin(*argv);
  if (flags.dry_run) {
    std::cout << line << std::endl;
    return 0;
  }
  std::fprintf(stderr, "headwise launch: %s\n", line.c_str());
  std::fflush(stderr);
  std::vector<char*> args;
  for (std::string& arg : *argv) args.push_back(arg.data());
  args.push_back(nullptr);
  execvp(args[0], args.data());
  const int exec_errno = errno;  // only reached when exec failed
  std::fprintf(stderr, "headwise launch: %s: cannot run '%s': %s%s\n",
               exec_errno == ENOENT ? "NOT_FOUND" : "FAILED_PRECONDITION", flags.mpirun.c_str(),
               std::strerror(exec_errno),
               exec_errno == ENOENT ? " (install openmpi-bin or pass --mpirun PATH)" : "");
  return exec_errno == ENOENT ? 127 : 126;
}

}  // namespace

void RegisterLaunchCommand(CLI::App& app, CommandRunner& run) {
  auto flags = std::make_shared<LaunchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Run a headwise command on every rank under mpirun: launch --hosts h1:2,h2:1 -np 3 -- "
      "serve ...");
  cmd->add_option("--hosts", flags->hosts,
                  "Hosts and their slots, name[:slots],... (default: the local host or the "
                  "Slurm allocation mpirun runs in)");
  cmd->add_option("--hostfile", flags->hostfile, "An mpirun hostfile instead of --hosts")
      ->excludes("--hosts");
  CLI::Option* np = cmd->add_option("-n,--np", flags->np, "Ranks to start (also spelled -np)");
  cmd->add_flag("--dry-run", flags->dry_run, "Print the mpirun command on one line and exit");
  cmd->add_flag("--oversubscribe", flags->oversubscribe,
                "Allow more ranks than slots (added by itself when -np exceeds the --hosts slots)");
  cmd->add_option("--mpirun", flags->mpirun, "The mpirun to run")->capture_default_str();
  cmd->add_option("--ucx-tls", flags->ucx_tls,
                  "UCX_TLS for every rank (default: UCX_TLS of the environment, if set)");
  cmd->add_option("--ucx-net-devices", flags->ucx_net_devices,
                  "UCX_NET_DEVICES for every rank (default: the environment's, if set)");
  cmd->add_option("command", flags->command,
                  "After `--`: the headwise command every rank runs (serve ..., generate ...)");
  cmd->allow_extras();
  AddEnvTwins(*cmd);
  for (const CLI::Option* option : cmd->get_options()) {
    if (!option->get_envname().empty()) flags->own_env.insert(option->get_envname());
  }
  cmd->callback([flags, cmd, np, &run] {
    flags->np_given = np->count() > 0;
    // remaining() also lists the `--` separator itself.
    for (std::string& arg : cmd->remaining()) {
      if (arg != "--") flags->unexpected.push_back(std::move(arg));
    }
    run = [flags] { return RunLaunch(*flags); };
  });
}

}  // namespace headwise::launcher
