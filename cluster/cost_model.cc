// Roofline estimates; see cost_model.h. Bandwidths are GB/s (1e9 bytes/s).
#include "cluster/cost_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace headwise::cluster {

std::optional<ExecMode> ParseExecMode(std::string_view name) {
  if (name == "auto") return ExecMode::kAuto;
  if (name == "pull") return ExecMode::kPull;
  if (name == "delegate") return ExecMode::kDelegate;
  return std::nullopt;
}

const char* ExecModeName(ExecMode mode) {
  switch (mode) {
    case ExecMode::kAuto:
      return "auto";
    case ExecMode::kPull:
      return "pull";
    case ExecMode::kDelegate:
      return "delegate";
  }
  return "?";
}

namespace {

// Seconds to read `bytes` from a disk of `gbps` (no disk probe: free).
double DiskSeconds(const RankProbe& rank, int64_t bytes) {
  return bytes > 0 && rank.disk_read_gbps > 0 ? bytes / (rank.disk_read_gbps * 1e9) : 0.0;
}

}  // namespace

double CostModel::PullSeconds(int rank, int64_t kv_bytes, int64_t disk_bytes) const {
  const RankProbe& remote = ranks[rank];
  const RankProbe& local = ranks[0];
  return remote.rtt_seconds + DiskSeconds(remote, disk_bytes) +
         kv_bytes / (remote.link_gbps * 1e9) + kv_bytes / (local.attention_gbps * 1e9);
}

double CostModel::DelegateSeconds(int rank, int64_t kv_bytes, int64_t message_bytes,
                                  int64_t disk_bytes) const {
  const RankProbe& remote = ranks[rank];
  // Disk blocks are computed on as they arrive: the slower of the two.
  const double memory = (kv_bytes - disk_bytes) / (remote.attention_gbps * 1e9);
  const double disk =
      std::max(DiskSeconds(remote, disk_bytes), disk_bytes / (remote.attention_gbps * 1e9));
  return remote.rtt_seconds + message_bytes / (remote.link_gbps * 1e9) + memory + disk;
}

ExecMode CostModel::Choose(ExecMode mode, int rank, int64_t kv_bytes, int64_t message_bytes,
                           int64_t disk_bytes) const {
  if (mode != ExecMode::kAuto) return mode;
  if (rank <= 0 || rank >= static_cast<int>(ranks.size()) || ranks[rank].link_gbps <= 0 ||
      ranks[rank].attention_gbps <= 0 || ranks[0].attention_gbps <= 0) {
    return ExecMode::kDelegate;
  }
  return PullSeconds(rank, kv_bytes, disk_bytes) <
                 DelegateSeconds(rank, kv_bytes, message_bytes, disk_bytes)
             ? ExecMode::kPull
             : ExecMode::kDelegate;
}

std::string CostModel::Describe() const {
  std::string out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    absl::StrAppend(&out, r == 0 ? "" : "; ", "rank ", r, ": attention ",
                    absl::StrFormat("%.2f", ranks[r].attention_gbps), " GB/s");
    if (r > 0) {
      absl::StrAppend(&out, ", link ", absl::StrFormat("%.2f", ranks[r].link_gbps), " GB/s, rtt ",
                      absl::StrFormat("%.0f", ranks[r].rtt_seconds * 1e6), " us");
    }
    if (ranks[r].disk_bytes > 0) {
      absl::StrAppend(&out, ", disk ",
                      absl::StrFormat("%.2f", ranks[r].disk_bytes / double(1 << 30)),
                      " GiB read at ", absl::StrFormat("%.2f", ranks[r].disk_read_gbps), " GB/s");
    }
  }
  return out;
}

}  // namespace headwise::cluster
