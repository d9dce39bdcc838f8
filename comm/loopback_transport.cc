// Loopback ranks complete every operation when it is posted: a get or put is
// a memcpy into or out of the peer's pool, a call runs the peer's handler.
// Tickets only carry the outcome to Wait.
#include "comm/loopback_transport.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace headwise::comm {

class LoopbackWorld::Rank final : public KvTransport {
 public:
  Rank(LoopbackWorld& world, int rank, int size, int64_t pool_bytes)
      : world_(world), rank_(rank), pool_(static_cast<size_t>(pool_bytes)), traffic_(size) {}

  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  const std::vector<PeerInfo>& peers() const override { return world_.peers_; }
  uint8_t* pool() override { return pool_.empty() ? nullptr : pool_.data(); }
  absl::Duration peer_timeout() const override { return world_.peer_timeout_; }

  absl::StatusOr<RmaTicket> PostGets(int rank, std::vector<RmaItem> items) override {
    if (absl::Status s = Check(rank, items); !s.ok()) return s;
    Rank& peer = *world_.ranks_[rank];
    for (const RmaItem& item : items) {
      std::memcpy(item.local, peer.pool_.data() + item.offset, item.bytes);
      traffic_[rank].bytes_received += static_cast<int64_t>(item.bytes);
    }
    return Done(absl::OkStatus());
  }

  absl::StatusOr<RmaTicket> PostPuts(int rank, std::vector<RmaItem> items) override {
    if (absl::Status s = Check(rank, items); !s.ok()) return s;
    Rank& peer = *world_.ranks_[rank];
    for (const RmaItem& item : items) {
      std::memcpy(peer.pool_.data() + item.offset, item.local, item.bytes);
      traffic_[rank].bytes_sent += static_cast<int64_t>(item.bytes);
    }
    return Done(absl::OkStatus());
  }

  absl::StatusOr<RmaTicket> PostCall(int rank, std::vector<std::byte> request,
                                     std::vector<std::byte>* reply) override {
    if (rank < 0 || rank >= size() || rank == rank_) {
      return absl::InvalidArgumentError(absl::StrCat("no peer rank ", rank));
    }
    const CallHandler& handler = world_.ranks_[rank]->handler_;
    if (!handler) return absl::UnavailableError(absl::StrCat("rank ", rank, " serves no calls"));
    traffic_[rank].bytes_sent += static_cast<int64_t>(request.size());
    ++traffic_[rank].calls;
    absl::StatusOr<CallReply> result = handler(request);
    if (!result.ok()) {
      return Done(absl::Status(result.status().code(),
                               absl::StrCat("rank ", rank, ": ", result.status().message())));
    }
    traffic_[rank].bytes_received += static_cast<int64_t>(result->bytes.size());
    *reply = std::move(result->bytes);
    return Done(absl::OkStatus());
  }

  bool Poll(RmaTicket ticket) override { return outcomes_.count(ticket) > 0; }

  absl::Status Wait(RmaTicket ticket) override {
    auto it = outcomes_.find(ticket);
    if (it == outcomes_.end()) return absl::InvalidArgumentError("unknown transport ticket");
    absl::Status status = it->second;
    outcomes_.erase(it);
    return status;
  }

  absl::Status Serve(const CallHandler& handler) override {
    handler_ = handler;
    return absl::OkStatus();
  }

  PeerTraffic traffic(int rank) const override { return traffic_[rank]; }

 private:
  friend class LoopbackWorld;

  absl::Status Check(int rank, const std::vector<RmaItem>& items) const {
    if (rank < 0 || rank >= size() || rank == rank_) {
      return absl::InvalidArgumentError(absl::StrCat("no peer rank ", rank));
    }
    const uint64_t pool = world_.ranks_[rank]->pool_.size();
    for (const RmaItem& item : items) {
      if (item.offset > pool || item.bytes > pool - item.offset) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ": ", item.bytes,
                                                       " bytes at offset ", item.offset,
                                                       " lie outside its pool of ", pool));
      }
    }
    return absl::OkStatus();
  }

  RmaTicket Done(absl::Status status) {
    outcomes_.emplace(++last_ticket_, std::move(status));
    return last_ticket_;
  }

  LoopbackWorld& world_;
  const int rank_;
  std::vector<uint8_t> pool_;
  std::vector<PeerTraffic> traffic_;
  CallHandler handler_;
  std::map<RmaTicket, absl::Status> outcomes_;
  RmaTicket last_ticket_ = 0;
};

LoopbackWorld::LoopbackWorld(std::vector<int64_t> pool_bytes, absl::Duration peer_timeout)
    : peer_timeout_(peer_timeout) {
  for (size_t r = 0; r < pool_bytes.size(); ++r) {
    peers_.push_back({absl::StrCat("loopback-", r), pool_bytes[r]});
    ranks_.push_back(std::make_unique<Rank>(*this, static_cast<int>(r),
                                            static_cast<int>(pool_bytes.size()), pool_bytes[r]));
  }
}

LoopbackWorld::~LoopbackWorld() = default;

KvTransport& LoopbackWorld::transport(int rank) { return *ranks_[rank]; }

void LoopbackWorld::SetHandler(int rank, CallHandler handler) {
  ranks_[rank]->handler_ = std::move(handler);
}

absl::Status FaultyTransport::Inject(int rank) {
  if (rank != plan_.rank) return absl::OkStatus();
  if (plan_.delay > absl::ZeroDuration())
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(plan_.delay));
  if (plan_.fail_after >= 0 && ops_++ >= plan_.fail_after) {
    ++injected_failures_;
    return absl::UnavailableError(absl::StrCat("rank ", rank, " is unreachable (injected fault)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RmaTicket> FaultyTransport::Track(int rank, absl::StatusOr<RmaTicket> ticket) {
  if (ticket.ok() && rank == plan_.rank && plan_.polls_before_done > 0) {
    late_[*ticket] = plan_.polls_before_done;
  }
  return ticket;
}

absl::StatusOr<RmaTicket> FaultyTransport::PostGets(int rank, std::vector<RmaItem> items) {
  if (absl::Status s = Inject(rank); !s.ok()) return s;
  return Track(rank, inner_.PostGets(rank, std::move(items)));
}

absl::StatusOr<RmaTicket> FaultyTransport::PostPuts(int rank, std::vector<RmaItem> items) {
  if (absl::Status s = Inject(rank); !s.ok()) return s;
  return Track(rank, inner_.PostPuts(rank, std::move(items)));
}

absl::StatusOr<RmaTicket> FaultyTransport::PostCall(int rank, std::vector<std::byte> request,
                                                    std::vector<std::byte>* reply) {
  if (absl::Status s = Inject(rank); !s.ok()) return s;
  return Track(rank, inner_.PostCall(rank, std::move(request), reply));
}

bool FaultyTransport::Poll(RmaTicket ticket) {
  if (auto it = late_.find(ticket); it != late_.end() && it->second > 0) {
    --it->second;
    return false;
  }
  return inner_.Poll(ticket);
}

absl::Status FaultyTransport::Wait(RmaTicket ticket) {
  late_.erase(ticket);
  return inner_.Wait(ticket);
}

}  // namespace headwise::comm
