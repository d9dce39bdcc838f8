// Subcommands of the `headwise` executable. Each Register* function adds its
// subcommand and options to `app` and, when that subcommand is chosen, sets
// `run` to the function main() calls after parsing; it returns the exit code.
#pragma once

#include <functional>

#include "CLI/CLI.hpp"

namespace headwise::launcher {

using CommandRunner = std::function<int()>;

void RegisterInspectCommand(CLI::App& app, CommandRunner& run);
void RegisterGenerateCommand(CLI::App& app, CommandRunner& run);
// eval: the attention policies' fidelity harness (docs/FIDELITY.md).
void RegisterEvalCommand(CLI::App& app, CommandRunner& run);
void RegisterServeCommand(CLI::App& app, CommandRunner& run);
// ask, status, close: clients of a running server.
void RegisterClientCommands(CLI::App& app, CommandRunner& run);
// launch: runs a command on every rank under mpirun (launcher/mpirun_command.h).
void RegisterLaunchCommand(CLI::App& app, CommandRunner& run);

}  // namespace headwise::launcher
