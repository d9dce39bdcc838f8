// KvTransport over UCX between the ranks of an MPI communicator: each rank's
// pool is an anonymous mapping registered for RMA, rank 0 (the coordinator)
// reads and writes memory ranks' pools with ucp_get/put_nbx and calls their
// handlers with active messages. Only rank 0 <-> memory-rank endpoints exist.
// A progress thread per rank keeps the worker moving (an RMA target must
// progress) and sleeps on the worker's event fd when idle.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/kv_transport.h"

namespace headwise::comm {

struct UcxTransportOptions {
  // This rank's pool; 0 means none (pool() is null, peers cannot address it).
  int64_t pool_bytes = 0;
  // Bound on every wait for a peer (RMA completion, call reply, reply send).
  absl::Duration peer_timeout = absl::Seconds(10);
  // kPeer: UCX watches peers (a dead peer is UNAVAILABLE at once) but refuses
  // shared-memory transports, so ranks on one host talk over tcp. kNone:
  // shared memory + cma where available; a dead peer shows only as a
  // timeout. kAuto: kPeer where UCX can connect every endpoint that way,
  // otherwise kNone (with a warning) — e.g. under UCX_TLS=sm,self.
  enum class ErrorMode { kAuto, kPeer, kNone };
  ErrorMode error_mode = ErrorMode::kAuto;
};

class UcxTransport final : public KvTransport {
 public:
  // Collective over `comm` (every rank calls it; all succeed or all fail).
  // The transport must be destroyed before MPI_Finalize; destruction is not
  // collective and bounded in time.
  static absl::StatusOr<std::unique_ptr<UcxTransport>> Create(MPI_Comm comm,
                                                              const UcxTransportOptions& options);

  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;
  ~UcxTransport() override;

  int rank() const override;
  int size() const override;
  const std::vector<PeerInfo>& peers() const override;
  uint8_t* pool() override;
  absl::Duration peer_timeout() const override;

  // Post*/Poll/Wait: one thread at a time (the coordinator's compute thread).
  // Only rank 0 <-> other ranks have endpoints; any other pair is
  // INVALID_ARGUMENT. A get/put that times out makes the rank lost (later
  // posts to it are UNAVAILABLE). In kPeer mode its endpoint is force-closed,
  // cancelling what is in flight; in kNone mode UCX cannot cancel RMA, so a
  // timed-out transfer may still touch the caller's buffers until the
  // transport is destroyed. A call that times out is only abandoned (its
  // late reply is dropped; the rank stays usable).
  absl::StatusOr<RmaTicket> PostGets(int rank, std::vector<RmaItem> items) override;
  absl::StatusOr<RmaTicket> PostPuts(int rank, std::vector<RmaItem> items) override;
  absl::StatusOr<RmaTicket> PostCall(int rank, std::vector<std::byte> request,
                                     std::vector<std::byte>* reply) override;
  bool Poll(RmaTicket ticket) override;
  absl::Status Wait(RmaTicket ticket) override;

  // Memory ranks (not rank 0), on the calling thread. With ErrorMode kNone a
  // dead rank 0 is not noticed while idle: Serve then waits for requests.
  absl::Status Serve(const CallHandler& handler) override;

  PeerTraffic traffic(int rank) const override;

  // The mode all ranks agreed on: kPeer or kNone (never kAuto).
  UcxTransportOptions::ErrorMode error_mode() const;

 private:
  struct Impl;
  explicit UcxTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace headwise::comm
