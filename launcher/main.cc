// Entry point of `headwise`: one executable, one subcommand per job (DESIGN.md,
// "User-facing contract"). Parsing errors print CLI11's message and usage.
#include <cstdlib>
#include <string>

#include "CLI/CLI.hpp"
#include "comm/build_info.h"
#include "launcher/commands.h"
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
  headwise::launcher::RegisterServeCommand(app, run);
  headwise::launcher::RegisterClientCommands(app, run);

  CLI11_PARSE(app, argc, argv);
  return run ? run() : EXIT_FAILURE;
}
