// Where a remote rank's partial attention runs (DESIGN.md "execution mode"):
// `pull` reads the rank's blocks over the link and computes on the
// coordinator; `delegate` sends the queries and the rank computes next to
// its memory, returning (o, lse). A roofline over probes taken at start-up
// (link bandwidth and round trip per rank, attention bandwidth per rank)
// chooses when the mode is `auto`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace headwise::cluster {

enum class ExecMode { kAuto, kPull, kDelegate };

std::optional<ExecMode> ParseExecMode(std::string_view name);  // "auto", "pull", "delegate"
const char* ExecModeName(ExecMode mode);

// What start-up probes measured for one rank, seen from the coordinator.
struct RankProbe {
  double link_gbps = 0;       // one-sided read bandwidth coordinator <- rank, GB/s
  double rtt_seconds = 0;     // an empty call's round trip
  double attention_gbps = 0;  // KV bytes/s the rank's partial-attention kernel reads, GB/s
  // The rank's disk tier: its budget and a sequential read of it, GB/s
  // (0 and 0 without one).
  int64_t disk_bytes = 0;
  double disk_read_gbps = 0;
};

struct CostModel {
  std::vector<RankProbe> ranks;  // by rank; ranks[0] is the coordinator (link unused)

  // Estimated seconds for a partial over `kv_bytes` of `rank`'s blocks, of
  // which `disk_bytes` are on its disk, with `message_bytes` of queries out
  // plus (o, lse) back. Pull reads disk blocks there and ships them (fetch);
  // delegate computes on them as they stream from the disk (near-storage).
  double PullSeconds(int rank, int64_t kv_bytes, int64_t disk_bytes = 0) const;
  double DelegateSeconds(int rank, int64_t kv_bytes, int64_t message_bytes,
                         int64_t disk_bytes = 0) const;
  // `mode` unless it is kAuto; then the cheaper estimate (delegate on ties
  // or without probes: it moves no KV).
  ExecMode Choose(ExecMode mode, int rank, int64_t kv_bytes, int64_t message_bytes,
                  int64_t disk_bytes = 0) const;
  // One line per rank, for the log.
  std::string Describe() const;
};

}  // namespace headwise::cluster
