// Options shared by several subcommands: the default model path, byte sizes
// with KiB/MiB/GiB suffixes, and the HEADWISE_* environment twin of a flag.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace headwise::launcher {

// The model `-m` defaults to: $HEADWISE_MODEL, else the fetched SmolLM2 in
// ./models, else in the models/ folder of the source tree the binary was built
// from (so build/launcher/headwise works from any directory).
std::string DefaultModelPath();

// Adds `-m,--model` with the default above and the HEADWISE_MODEL twin.
CLI::Option* AddModelOption(CLI::App& cmd, std::string& path);

// "4096", "64KiB", "1.5 GiB", "2G" -> bytes. InvalidArgument otherwise.
absl::StatusOr<uint64_t> ParseBytes(std::string_view text);

// Gives every option of `cmd` that has a long name and no environment
// variable yet its HEADWISE_* twin (the flag wins over the variable). Call
// after all options are added. --help and --version are left alone.
void AddEnvTwins(CLI::App& cmd);

// "HEADWISE_" + upper-case flag name with '-' -> '_' (e.g. kv-block -> HEADWISE_KV_BLOCK).
std::string EnvTwin(std::string_view flag);

}  // namespace headwise::launcher
