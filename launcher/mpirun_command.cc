// Building the mpirun argv of `headwise launch`; see mpirun_command.h.
#include "launcher/mpirun_command.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace headwise::launcher {
namespace {

bool HostNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
}

bool ShellSafeChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
}

}  // namespace

absl::StatusOr<std::vector<HostSlots>> ParseHosts(std::string_view text) {
  std::vector<HostSlots> hosts;
  for (size_t start = 0; start <= text.size();) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view entry = text.substr(start, comma - start);
    start = comma + 1;
    const std::string_view name = entry.substr(0, entry.find(':'));
    if (name.empty() || !std::all_of(name.begin(), name.end(), HostNameChar)) {
      return absl::InvalidArgumentError(
          "--hosts '" + std::string(text) + "': entry '" + std::string(entry) +
          "' is not name[:slots] (name: letters, digits, '.', '-', '_')");
    }
    HostSlots host{std::string(name), 0};
    if (name.size() < entry.size()) {
      const std::string_view slots = entry.substr(name.size() + 1);
      auto [end, ec] = std::from_chars(slots.data(), slots.data() + slots.size(), host.slots);
      if (slots.empty() || ec != std::errc() || end != slots.data() + slots.size() ||
          host.slots < 1) {
        return absl::InvalidArgumentError("--hosts '" + std::string(text) + "': slots '" +
                                          std::string(slots) + "' of host '" + std::string(name) +
                                          "' is not a positive integer");
      }
    }
    hosts.push_back(std::move(host));
  }
  return hosts;
}

absl::StatusOr<std::vector<std::string>> BuildMpirunArgv(const LaunchSpec& spec) {
  if (spec.np < 1) {
    return absl::InvalidArgumentError(absl::StrCat("-np ", spec.np, ": need at least 1 rank"));
  }
  if (spec.command.empty()) {
    return absl::InvalidArgumentError(
        "nothing to run: give the headwise command after `--` (e.g. -- serve -m model.gguf)");
  }
  if (spec.command.front() == "launch") {
    return absl::InvalidArgumentError("the command after `--` cannot be `launch` itself");
  }
  if (!spec.hosts.empty() && !spec.hostfile.empty()) {
    return absl::InvalidArgumentError("--hosts and --hostfile exclude each other");
  }
  if (spec.headwise.empty()) {
    return absl::InvalidArgumentError("the path of the headwise binary is unknown");
  }

  std::vector<std::string> argv = {spec.mpirun};
  if (spec.run_as_root) argv.push_back("--allow-run-as-root");
  if (!spec.hosts.empty()) {
    std::vector<std::string> entries;
    int64_t slots = 0;
    for (const HostSlots& host : spec.hosts) {
      entries.push_back(host.slots > 0 ? absl::StrCat(host.name, ":", host.slots) : host.name);
      slots += host.slots > 0 ? host.slots : 1;
    }
    argv.insert(argv.end(), {"--host", absl::StrJoin(entries, ",")});
    if (!spec.oversubscribe && spec.np > slots) argv.push_back("--oversubscribe");
  }
  if (!spec.hostfile.empty()) argv.insert(argv.end(), {"--hostfile", spec.hostfile});
  if (spec.oversubscribe) argv.push_back("--oversubscribe");
  argv.insert(argv.end(), {"-np", absl::StrCat(spec.np)});
  // ob1: the UCX pml needs extra settings on hosts without InfiniBand, and
  // MPI only carries control traffic (KV moves over headwise's own UCX).
  // --bind-to none: rank 0's thread pool must not be pinned to one core.
  argv.insert(argv.end(), {"--mca", "pml", "ob1", "--bind-to", "none"});
  if (!spec.ucx_tls.empty()) argv.insert(argv.end(), {"-x", "UCX_TLS=" + spec.ucx_tls});
  if (!spec.ucx_net_devices.empty()) {
    argv.insert(argv.end(), {"-x", "UCX_NET_DEVICES=" + spec.ucx_net_devices});
  }
  for (const std::string& name : spec.forwarded_env) argv.insert(argv.end(), {"-x", name});
  argv.push_back(spec.headwise);
  argv.insert(argv.end(), spec.command.begin(), spec.command.end());
  return argv;
}

std::vector<std::string> ForwardedEnv(const char* const* envp, bool skip_ucx_tls,
                                      bool skip_ucx_net_devices) {
  std::vector<std::string> names;
  for (; envp != nullptr && *envp != nullptr; ++envp) {
    const std::string_view entry(*envp);
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    const std::string_view name = entry.substr(0, eq);
    if ((name.starts_with("HEADWISE_") && name.size() > 9) ||
        (name == "UCX_TLS" && !skip_ucx_tls) ||
        (name == "UCX_NET_DEVICES" && !skip_ucx_net_devices)) {
      names.emplace_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::string ShellQuote(std::string_view word) {
  if (!word.empty() && std::all_of(word.begin(), word.end(), ShellSafeChar)) {
    return std::string(word);
  }
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

std::string ShellJoin(const std::vector<std::string>& words) {
  std::string line;
  for (const std::string& word : words) {
    if (!line.empty()) line += ' ';
    line += ShellQuote(word);
  }
  return line;
}

void RewriteLaunchNp(std::vector<std::string>& args) {
  // The app has no options of its own that take a value, so the subcommand
  // is the first argument.
  if (args.empty() || args.front() != "launch") return;
  for (auto it = args.begin() + 1; it != args.end() && *it != "--"; ++it) {
    if (*it == "-np") {
      *it = "--np";
    } else if (it->starts_with("-np=")) {
      *it = "--np=" + it->substr(4);
    }
  }
}

}  // namespace headwise::launcher
