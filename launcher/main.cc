// Entry point of `headwise`: one executable, one subcommand per job (DESIGN.md,
// "User-facing contract"). Parsing errors print CLI11's message and usage.
#include <cstdlib>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "comm/build_info.h"
#include "launcher/commands.h"
#include "launcher/mpirun_command.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  // HEADWISE_LOG=debug|info|warn|error sets the log level.
  if (const char* level = std::getenv("HEADWISE_LOG"); level != nullptr) {
    spdlog::set_level(spdlog::level::from_str(level));
  }

  CLI::App app{"headwise: long-context Llama-family inference with KV split across ranks"};
  app.set_version_flag("--version", [] {
    return std::string("headwise ") + HEADWISE_VERSION + " (" + HEADWISE_BUILD_FEATURES + "; " +
           headwise::comm::TransportVersions() + ")";
  });
  app.require_subcommand(1);

  headwise::launcher::CommandRunner run;
  headwise::launcher::RegisterInspectCommand(app, run);
  headwise::launcher::RegisterGenerateCommand(app, run);
  headwise::launcher::RegisterEvalCommand(app, run);
  headwise::launcher::RegisterServeCommand(app, run);
  headwise::launcher::RegisterClientCommands(app, run);
  headwise::launcher::RegisterLaunchCommand(app, run);

  // `launch` takes mpirun's `-np N`, which CLI11 cannot name: spell it --np.
  std::vector<std::string> args(argv + 1, argv + argc);
  headwise::launcher::RewriteLaunchNp(args);
  std::vector<char*> parsed = {argv[0]};
  for (std::string& arg : args) parsed.push_back(arg.data());
  CLI11_PARSE(app, static_cast<int>(parsed.size()), parsed.data());
  return run ? run() : EXIT_FAILURE;
}
