// Launch detection from the environment; see world.h.
#include "cluster/world.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace headwise::cluster {
namespace {

std::optional<int> EnvInt(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  std::string_view text(value);
  int out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc() || end != text.data() + text.size() || out < 0) return std::nullopt;
  return out;
}

bool Apply(LaunchInfo& info, Launcher launcher, const char* rank_var, const char* size_var) {
  std::optional<int> rank = EnvInt(rank_var);
  std::optional<int> size = EnvInt(size_var);
  if (!rank || !size || *size < 1 || *rank >= *size) return false;
  info.launcher = launcher;
  info.rank = *rank;
  info.world_size = *size;
  return true;
}

}  // namespace

LaunchInfo DetectLaunch() {
  LaunchInfo info;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) info.hostname = host;
  Apply(info, Launcher::kOpenMpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE") ||
      Apply(info, Launcher::kPmix, "PMIX_RANK", "PMIX_SIZE") ||
      Apply(info, Launcher::kPmix, "PMIX_RANK", "OMPI_UNIVERSE_SIZE") ||
      Apply(info, Launcher::kSlurm, "SLURM_PROCID", "SLURM_NTASKS");
  return info;
}

const char* LauncherName(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone:
      return "none";
    case Launcher::kOpenMpi:
      return "openmpi";
    case Launcher::kSlurm:
      return "slurm";
    case Launcher::kPmix:
      return "pmix";
  }
  return "unknown";
}

}  // namespace headwise::cluster
