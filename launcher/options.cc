// Shared option helpers; see options.h.
#include "launcher/options.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace headwise::launcher {

std::string DefaultModelPath() {
  if (const char* env = std::getenv("HEADWISE_MODEL"); env != nullptr && *env != '\0') return env;
  const std::string relative = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(relative)) return relative;
  const std::filesystem::path in_tree = std::filesystem::path(HEADWISE_SOURCE_DIR) / relative;
  if (std::filesystem::exists(in_tree)) return in_tree.string();
  return relative;
}

CLI::Option* AddModelOption(CLI::App& cmd, std::string& path) {
  path = DefaultModelPath();
  return cmd.add_option("-m,--model", path, "GGUF model file (default: the fetched SmolLM2)")
      ->envname("HEADWISE_MODEL")
      ->capture_default_str();
}

absl::StatusOr<uint64_t> ParseBytes(std::string_view text_view) {
  const std::string text(text_view);
  std::string s(absl::StripAsciiWhitespace(text));
  size_t split = 0;
  while (split < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[split])) || s[split] == '.')) {
    ++split;
  }
  std::string number = s.substr(0, split);
  std::string unit =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(std::string(s.substr(split))));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value) || !std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a size (try 4096, 64KiB, 2GiB)"));
  }
  double scale = 0;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    scale = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': unknown size unit '", unit, "' (use KiB, MiB, GiB or TiB)"));
  }
  const double bytes = value * scale;
  if (bytes >= 18446744073709551615.0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is too large"));
  }
  return static_cast<uint64_t>(std::llround(bytes));
}

void AddEnvTwins(CLI::App& cmd) {
  for (CLI::Option* option : cmd.get_options()) {
    if (option->get_lnames().empty() || !option->get_envname().empty()) continue;
    const std::string& name = option->get_lnames().front();
    if (name == "help" || name == "version") continue;
    option->envname(EnvTwin(name));
  }
}

std::string EnvTwin(std::string_view flag) {
  std::string name = "HEADWISE_";
  for (char c : flag)
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace headwise::launcher
