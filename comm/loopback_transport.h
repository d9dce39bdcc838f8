// In-process transports for tests. LoopbackWorld holds every rank of a world
// in one process: each rank's pool is plain memory and a call runs the
// target rank's handler on the caller's thread, so the distributed KV path
// can be tested exactly and fast without MPI. FaultyTransport wraps any
// transport and delays or fails the operations to chosen ranks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "comm/kv_transport.h"

namespace headwise::comm {

class LoopbackWorld {
 public:
  // `pool_bytes[r]` is rank r's pool size.
  explicit LoopbackWorld(std::vector<int64_t> pool_bytes,
                         absl::Duration peer_timeout = absl::Seconds(10));
  ~LoopbackWorld();
  LoopbackWorld(const LoopbackWorld&) = delete;
  LoopbackWorld& operator=(const LoopbackWorld&) = delete;

  int size() const { return static_cast<int>(ranks_.size()); }
  // Rank r's view of the world; owned by the world.
  KvTransport& transport(int rank);
  // The handler calls to `rank` run (what that rank's Serve would run).
  void SetHandler(int rank, CallHandler handler);

 private:
  class Rank;
  friend class Rank;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::vector<PeerInfo> peers_;
  absl::Duration peer_timeout_;
};

// Faults to inject into operations aimed at one rank.
struct FaultPlan {
  int rank = -1;                                // the peer affected
  int64_t fail_after = -1;                      // ops to it that succeed first (-1: never fail)
  absl::Duration delay = absl::ZeroDuration();  // added to every op to it
  // Poll reports an op to it done only after this many polls (a slow link:
  // puts land late); Wait still waits for it.
  int32_t polls_before_done = 0;
};

class FaultyTransport final : public KvTransport {
 public:
  FaultyTransport(KvTransport& inner, FaultPlan plan) : inner_(inner), plan_(plan) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::vector<PeerInfo>& peers() const override { return inner_.peers(); }
  uint8_t* pool() override { return inner_.pool(); }
  absl::Duration peer_timeout() const override { return inner_.peer_timeout(); }
  absl::StatusOr<RmaTicket> PostGets(int rank, std::vector<RmaItem> items) override;
  absl::StatusOr<RmaTicket> PostPuts(int rank, std::vector<RmaItem> items) override;
  absl::StatusOr<RmaTicket> PostCall(int rank, std::vector<std::byte> request,
                                     std::vector<std::byte>* reply) override;
  bool Poll(RmaTicket ticket) override;
  absl::Status Wait(RmaTicket ticket) override;
  absl::Status Serve(const CallHandler& handler) override { return inner_.Serve(handler); }
  PeerTraffic traffic(int rank) const override { return inner_.traffic(rank); }

  int64_t injected_failures() const { return injected_failures_; }

 private:
  // OK, or the injected failure for an op to `rank` (after the delay).
  absl::Status Inject(int rank);

  // Records an op to plan_.rank for polls_before_done.
  absl::StatusOr<RmaTicket> Track(int rank, absl::StatusOr<RmaTicket> ticket);

  KvTransport& inner_;
  FaultPlan plan_;
  std::unordered_map<RmaTicket, int32_t> late_;  // ticket -> polls still to fail
  int64_t ops_ = 0;
  int64_t injected_failures_ = 0;
};

}  // namespace headwise::comm
