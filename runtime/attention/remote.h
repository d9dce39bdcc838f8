// The coordinator <-> memory rank protocol (DESIGN.md "execution mode"):
// a delegate request carries queries and, per kv head, the pool offsets of
// the rank's blocks; the memory rank computes the partial next to its memory
// on its own device and returns (o, lse). The same calls carry start-up
// probes, per-rank statistics and the stop at the end of a run. Every offset
// and length a peer sends is checked before use.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/cost_model.h"
#include "comm/kv_transport.h"
#include "kernels/ops.h"
#include "runtime/attention/token_gather.h"
#include "runtime/device/device.h"
#include "runtime/kv/storage_rank.h"

namespace headwise::attention {

// One block of a delegate request: in the memory rank's host pool (at
// `offset`) or on its disk tier (`on_disk`, in slot `offset`).
struct RemoteBlock {
  uint64_t offset = 0;
  int32_t n_tokens = 0;
  int32_t pos0 = 0;  // position of its first token
  int32_t on_disk = 0;
  // The token offsets attended (quantkv), increasing; empty: all of them.
  std::vector<uint16_t> tokens;
  // > 0 (hybrid, one query row): only this many tokens, the best by exact
  // score for the row's queries, chosen here.
  int32_t top_k = 0;
};

// A delegate request: the partials of `heads` (kv head indices, in reply
// order) over their blocks, for n_rows queries.
struct DelegateRequest {
  int32_t head_dim = 0;
  int32_t group_size = 0;  // query heads per kv head
  int32_t block_tokens = 0;
  kernels::KvDtype dtype = kernels::KvDtype::kF32;
  float scale = 0;
  int64_t n_rows = 0;
  std::vector<int32_t> q_pos;                    // n_rows
  std::vector<int32_t> heads;                    // kv heads
  std::vector<std::vector<RemoteBlock>> blocks;  // per entry of heads
  std::vector<float> q;                          // [n_rows x heads.size() x group_size x head_dim]
};

std::vector<std::byte> EncodeDelegate(const DelegateRequest& request);
// The reply: o [n_rows x heads x group x head_dim] then lse [n_rows x heads x group].
absl::Status DecodeDelegateReply(std::span<const std::byte> reply, int64_t n_rows, int64_t n_heads,
                                 int32_t group_size, int32_t head_dim, std::vector<float>* o,
                                 std::vector<float>* lse);

// What a memory rank did, reported to the coordinator at the end of a run.
struct MemoryRankStats {
  int64_t delegate_calls = 0;
  int64_t kv_bytes_attended = 0;
  double attention_seconds = 0;
  int64_t pool_bytes = 0;
  // Its disk tier: budget, and what was written and read (attended as it
  // streamed, fetched, saved) with the time the reads took.
  int64_t disk_bytes = 0;
  int64_t disk_bytes_written = 0;
  int64_t disk_bytes_read = 0;
  double disk_read_seconds = 0;
};

// Serves one memory rank: answers delegate, probe, stats, stop and the
// storage calls (kv::StorageRank), computing partials on `device` (which
// must read host memory directly: the pool is host memory) and on its CPU
// for disk blocks. Not thread-safe: calls come one at a time.
class MemoryRank {
 public:
  MemoryRank(comm::KvTransport& transport, device::Device& device, kv::DiskTierOptions disk = {})
      : transport_(transport), device_(device), storage_(transport, std::move(disk)) {}

  absl::StatusOr<comm::CallReply> Handle(std::span<const std::byte> request);
  // transport.Serve(Handle) until the coordinator stops it.
  absl::Status Serve();
  MemoryRankStats stats() const;

 private:
  absl::StatusOr<comm::CallReply> Delegate(std::span<const std::byte> body);

  comm::KvTransport& transport_;
  device::Device& device_;
  kv::StorageRank storage_;
  MemoryRankStats stats_;
  double disk_read_gbps_ = -1;  // measured on the first probe
  std::vector<kernels::KvBlockView> views_;
  TokenGather gather_;
  std::vector<float> o_, lse_;
};

// Coordinator side.
// Measures every rank's link, round trip and attention bandwidth (a few
// milliseconds per rank) and returns the cost model.
absl::StatusOr<cluster::CostModel> ProbeCluster(comm::KvTransport& transport);
// Collects every memory rank's statistics (index 0 stays empty).
absl::StatusOr<std::vector<MemoryRankStats>> CollectMemoryRankStats(comm::KvTransport& transport);
// Ends Serve on every memory rank.
absl::Status StopMemoryRanks(comm::KvTransport& transport);

// KV bytes/s the CPU partial-attention kernel reads on this machine, from a
// short timed run (the attention probe of ProbeCluster).
double MeasureAttentionGbps();

}  // namespace headwise::attention
