// The inter-rank transport the KV path uses, with no model knowledge: every
// rank exposes one pool of bytes (its host KV pool, registered for RMA);
// the coordinator reads and writes peers' pools one-sidedly (pull mode,
// sealed blocks sent home) and calls a peer's handler with a request it gets
// a reply to (delegate mode, control). Offsets into a pool are what travel,
// never raw addresses. Every wait is bounded by the peer timeout: a peer that
// dies or stops answering is UNAVAILABLE naming the rank, never a hang.
//
// Implementations: UcxTransport (comm/ucx_transport.h: UCX RMA + active
// messages between MPI ranks), LoopbackWorld (every rank in one process, for
// tests) and FaultyTransport (wraps another and injects delays and failures).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace headwise::comm {

// Identifies a posted operation of one transport; 0 is never valid.
using RmaTicket = uint64_t;

// One contiguous range between local memory and a peer's pool.
struct RmaItem {
  void* local = nullptr;  // destination of a get, source of a put
  uint64_t offset = 0;    // into the peer's pool
  size_t bytes = 0;
};

// What a handler returns: the reply, and whether this was the last call the
// rank serves (Serve returns after sending it).
struct CallReply {
  std::vector<std::byte> bytes;
  bool stop_serving = false;
};
using CallHandler = std::function<absl::StatusOr<CallReply>(std::span<const std::byte> request)>;

// Traffic counted by the rank that initiates it, per peer.
struct PeerTraffic {
  int64_t bytes_sent = 0;      // puts and call requests to the peer
  int64_t bytes_received = 0;  // gets and call replies from the peer
  int64_t calls = 0;
};

struct PeerInfo {
  std::string hostname;
  int64_t pool_bytes = 0;
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank's hostname and pool size, exchanged at start.
  virtual const std::vector<PeerInfo>& peers() const = 0;
  // This rank's pool (pool_bytes of peers()[rank()]); null when empty.
  virtual uint8_t* pool() = 0;
  virtual absl::Duration peer_timeout() const = 0;

  // One-sided reads of `rank`'s pool into local memory. The ticket completes
  // when every byte is in place. Items must lie inside the peer's pool
  // (INVALID_ARGUMENT otherwise).
  virtual absl::StatusOr<RmaTicket> PostGets(int rank, std::vector<RmaItem> items) = 0;
  // One-sided writes into `rank`'s pool; the ticket completes when the data
  // is visible there (flushed), so a later call to that rank sees it. The
  // sources must stay valid until then.
  virtual absl::StatusOr<RmaTicket> PostPuts(int rank, std::vector<RmaItem> items) = 0;
  // Sends `request` to `rank`'s handler; `*reply` is filled before the
  // ticket completes and must outlive it.
  virtual absl::StatusOr<RmaTicket> PostCall(int rank, std::vector<std::byte> request,
                                             std::vector<std::byte>* reply) = 0;

  // True once the ticket's operation finished (OK or not; Wait tells which).
  virtual bool Poll(RmaTicket ticket) = 0;
  // Waits for the operation; at most peer_timeout() without progress.
  // UNAVAILABLE for a lost peer or a peer silent past the timeout, the
  // handler's error for a failed call. Retires the ticket.
  virtual absl::Status Wait(RmaTicket ticket) = 0;

  // Memory ranks: answers calls with `handler` until a reply says
  // stop_serving or the coordinator is lost (then UNAVAILABLE).
  virtual absl::Status Serve(const CallHandler& handler) = 0;

  // Traffic this rank initiated with `rank`.
  virtual PeerTraffic traffic(int rank) const = 0;
};

}  // namespace headwise::comm
