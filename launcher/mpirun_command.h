// The mpirun command line `headwise launch` runs: pure functions from the
// launch flags and the environment to an argv, so the command can be printed
// (--dry-run), unit-tested, and exec'd without a shell.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace headwise::launcher {

// One entry of --hosts: "name" or "name:slots". slots == 0: not given
// (OpenMPI 4 then counts one slot for the host).
struct HostSlots {
  std::string name;
  int slots = 0;
};

// "h1:2,h2,10.0.0.3:4" -> hosts. InvalidArgument naming the bad entry for an
// empty entry, a name with characters other than [A-Za-z0-9._-], or slots
// that are not a positive integer.
absl::StatusOr<std::vector<HostSlots>> ParseHosts(std::string_view text);

struct LaunchSpec {
  std::string mpirun = "mpirun";  // executable name (PATH) or path
  std::vector<HostSlots> hosts;   // --host; empty: mpirun's default (local host or allocation)
  std::string hostfile;           // --hostfile; excludes hosts
  int np = 0;                     // ranks, >= 1
  bool oversubscribe = false;     // force --oversubscribe (otherwise only when np > slots)
  bool run_as_root = false;       // adds --allow-run-as-root (euid 0)
  // UCX settings given as flags: spelled out as -x NAME=VALUE when not empty.
  std::string ucx_tls;
  std::string ucx_net_devices;
  // Variables forwarded by name (-x NAME: mpirun passes its own value), e.g.
  // every HEADWISE_* of the environment and UCX_* ones not given as flags.
  std::vector<std::string> forwarded_env;
  std::string headwise;              // absolute path of the headwise binary every rank runs
  std::vector<std::string> command;  // headwise arguments after `--`, e.g. {"serve", ...}
};

// The full argv, argv[0] == spec.mpirun. InvalidArgument when np < 1, the
// command is empty or is `launch` itself, or both hosts and hostfile are set.
// --oversubscribe is added when forced, or when hosts are given and np exceeds
// the slots they list (a host without :slots counts one).
absl::StatusOr<std::vector<std::string>> BuildMpirunArgv(const LaunchSpec& spec);

// Names of the variables of `envp` (NAME=VALUE, null-terminated) to forward:
// every HEADWISE_*, plus UCX_TLS / UCX_NET_DEVICES unless `skip_ucx_tls` /
// `skip_ucx_net_devices` (given as flags instead). Sorted.
std::vector<std::string> ForwardedEnv(const char* const* envp, bool skip_ucx_tls,
                                      bool skip_ucx_net_devices);

// POSIX-shell quoting: words of [A-Za-z0-9_@%+=:,./-] stay bare, others are
// single-quoted ('\'' for a quote). ShellJoin quotes each and joins by spaces.
std::string ShellQuote(std::string_view word);
std::string ShellJoin(const std::vector<std::string>& words);

// mpirun spells the rank count `-np`; CLI11 only knows one-dash one-letter
// names, so before parsing `headwise launch ... -np N ... -- ...` becomes
// `... --np N ...` (only between `launch`, the first argument, and `--`).
// args excludes argv[0].
void RewriteLaunchNp(std::vector<std::string>& args);

}  // namespace headwise::launcher
