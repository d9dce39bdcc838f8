// A distributed job's lifetime on one rank (DESIGN.md "rank"): MPI, the UCX
// transport with this rank's KV pool, and the roles: rank 0 coordinates (it
// probes the ranks for the pull/delegate cost model and later stops them);
// every other rank serves its pool as a memory rank until stopped. Started
// only when the launcher says the world has more than one rank, so single
// runs never touch MPI.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/cost_model.h"
#include "cluster/world.h"
#include "comm/mpi.h"
#include "comm/ucx_transport.h"
#include "runtime/kv/storage_rank.h"

namespace headwise::launcher {

// A memory rank's pool when --host-mem is 0 (address space is reserved,
// pages are touched only as blocks arrive).
inline constexpr int64_t kDefaultPoolBytes = int64_t{4} << 30;

class ClusterSession {
 public:
  // Collective: every rank of the launched world calls it. `pool_bytes` is
  // this rank's pool (ignored on rank 0, whose blocks stay in its own KV
  // store). `disk` is this rank's disk tier (made on first use on memory
  // ranks; rank 0's belongs to its KV stores). Rank 0 probes the other ranks
  // (and its own disk) and logs the cluster.
  static absl::StatusOr<std::unique_ptr<ClusterSession>> Start(const cluster::LaunchInfo& launch,
                                                               int64_t pool_bytes,
                                                               absl::Duration peer_timeout,
                                                               kv::DiskTierOptions disk = {});
  ~ClusterSession();

  bool coordinator() const { return transport_->rank() == 0; }
  comm::KvTransport& transport() { return *transport_; }
  const cluster::CostModel& costs() const { return costs_; }

  // Memory ranks: computes partials on the CPU with `threads` threads
  // (0: all cores) until the coordinator stops this rank. Exit code.
  int ServeMemoryRank(int threads);
  // Coordinator: stops every memory rank (after collecting their stats).
  absl::Status StopMemoryRanks();
  // Coordinator after a failure: ends the whole job now (MPI_Abort), so no
  // rank waits for a coordinator that gave up. Does not return.
  [[noreturn]] void Abort(int code);

 private:
  ClusterSession() = default;
  std::optional<comm::MpiSession> mpi_;
  std::unique_ptr<comm::UcxTransport> transport_;
  cluster::CostModel costs_;
  kv::DiskTierOptions disk_;
};

}  // namespace headwise::launcher
