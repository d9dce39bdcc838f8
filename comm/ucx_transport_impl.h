// Internal to comm/ucx_transport*.cc: the implementation state of
// UcxTransport and the small pieces its set-up and its operations share.
// Not for other users (include comm/ucx_transport.h).
#pragma once

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "comm/mpi.h"
#include "comm/ucx.h"
#include "spdlog/spdlog.h"
#include "ucs/debug/log_def.h"

#include "comm/ucx_transport.h"

namespace headwise::comm {
namespace ucx_detail {

using ErrorMode = UcxTransportOptions::ErrorMode;

constexpr unsigned kRequestAmId = 21;  // header: u64 call id
constexpr unsigned kReplyAmId = 22;    // header: ReplyHeader; data: reply or error message

struct ReplyHeader {
  uint64_t call_id = 0;
  int32_t code = 0;  // absl::StatusCode
  uint32_t reserved = 0;
};

// What every rank publishes at start; variable parts follow in this order.
struct BlobHeader {
  uint64_t pool_base = 0;
  uint64_t pool_bytes = 0;
  uint32_t address_bytes = 0;
  uint32_t rkey_bytes = 0;
  uint32_t host_bytes = 0;
  uint32_t reserved = 0;
};

struct PeerBlob {
  BlobHeader header;
  std::span<const std::byte> address, rkey;
  std::string host;
};

// Spins a little, then yields, then sleeps: ranks oversubscribe the cores.
class Backoff {
 public:
  void Idle() {
    if (++idle_ > 64) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else if (idle_ > 16) {
      std::this_thread::yield();
    }
  }
  void Reset() { idle_ = 0; }

 private:
  int idle_ = 0;
};

inline std::string RankName(int rank) { return absl::StrCat("rank ", rank); }

}  // namespace ucx_detail

using ucx_detail::ErrorMode;
using ucx_detail::PeerBlob;
using ucx_detail::RankName;
using ucx_detail::ReplyHeader;

struct UcxTransport::Impl {
  // A posted ticket. `requests`, `error`, `events` belong to the thread using
  // Post*/Poll/Wait; `replied` and `reply_status` are set by the reply handler
  // under `mu`. Heap-allocated: UCX reads `call_id` and `request` in place.
  struct Op {
    enum class Kind { kGet, kPut, kCall };
    Kind kind = Kind::kGet;
    int rank = 0;
    std::vector<void*> requests;
    absl::Status error;
    uint64_t events = 0;  // request completions and replies seen
    bool reply_seen = false;
    uint64_t call_id = 0;
    std::vector<std::byte> request;
    std::vector<std::byte>* reply = nullptr;
    bool replied = false;
    absl::Status reply_status;
  };

  // A rendezvous message being received; UCX writes into `buffer` until
  // OnRecvDone, so it lives in `pending_recvs` until then (or until the
  // worker is destroyed).
  struct PendingRecv {
    Impl* impl = nullptr;
    uint64_t id = 0;
    bool is_request = false;
    ReplyHeader header;
    std::vector<std::byte> buffer;
  };

  struct IncomingRequest {
    uint64_t call_id = 0;
    absl::Status status;  // a request that failed to arrive is answered with this
    std::vector<std::byte> bytes;
  };

  struct OutgoingReply {
    ReplyHeader header;
    std::vector<std::byte> bytes;
  };

  ~Impl();

  absl::Status SetUpLocal();
  absl::Status Connect(const std::vector<PeerBlob>& blobs, ErrorMode mode);
  void Disconnect(bool force);
  void ProgressLoop();

  absl::Status CheckPeer(int peer, std::string_view what) const;
  absl::StatusOr<RmaTicket> PostRma(Op::Kind kind, int peer, std::vector<RmaItem> items);
  absl::StatusOr<RmaTicket> PostCall(int peer, std::vector<std::byte> request,
                                     std::vector<std::byte>* reply);
  Op* FindOp(RmaTicket ticket);
  bool Check(Op& op);
  absl::Status Retire(RmaTicket ticket);
  absl::Status Abandon(RmaTicket ticket);
  absl::Status TransferError(const Op& op, ucs_status_t status) const;
  absl::Status Serve(const CallHandler& handler);
  absl::Status SendReply(uint64_t call_id, absl::StatusOr<CallReply> reply);

  static ucs_status_t OnRequestAm(void* arg, const void* header, size_t header_length, void* data,
                                  size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnReplyAm(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static void OnRecvDone(void* request, ucs_status_t status, size_t length, void* user_data);
  ucs_status_t OnAm(bool is_request, const void* header, size_t header_length, void* data,
                    size_t length, const ucp_am_recv_param_t* param) noexcept;
  void FinishRecv(PendingRecv* recv, ucs_status_t status) noexcept;
  void DeliverRequest(IncomingRequest request);
  void DeliverReply(const ReplyHeader& header, std::span<const std::byte> data,
                    std::vector<std::byte>* owned, absl::Status transfer_error);

  UcxTransportOptions options;
  ErrorMode mode = ErrorMode::kNone;
  int rank = 0;
  int size = 0;
  std::vector<PeerInfo> peers;
  std::vector<uint64_t> pool_base;  // peers' pool addresses, as they see them

  std::optional<UcxContext> context;
  std::optional<UcxWorker> worker;
  int efd = -1;  // owned by the worker
  void* pool = nullptr;
  size_t pool_size = 0;
  std::optional<UcxMemory> pool_memory;
  std::vector<std::byte> packed_rkey;
  // Per rank; only rank 0 <-> others exist. Compute thread (and Serve for
  // endpoints[0] on memory ranks); lost[r] is set when rank r was cut off.
  std::vector<std::optional<UcxEndpoint>> endpoints;
  std::vector<std::optional<UcxRemoteKey>> rkeys;
  std::vector<absl::Status> lost;

  std::thread progress_thread;
  std::atomic<bool> stop{false};

  mutable std::mutex mu;
  std::condition_variable incoming_cv;
  RmaTicket next_ticket ABSL_GUARDED_BY(mu) = 1;
  std::map<RmaTicket, std::unique_ptr<Op>> ops ABSL_GUARDED_BY(mu);
  std::deque<IncomingRequest> incoming ABSL_GUARDED_BY(mu);
  uint64_t next_recv_id ABSL_GUARDED_BY(mu) = 1;
  std::map<uint64_t, std::unique_ptr<PendingRecv>> pending_recvs ABSL_GUARDED_BY(mu);
  std::vector<PeerTraffic> traffic ABSL_GUARDED_BY(mu);
  // Buffers of given-up sends, which UCX may still read: freed after the worker.
  std::vector<std::unique_ptr<Op>> abandoned_ops ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<OutgoingReply>> abandoned_replies ABSL_GUARDED_BY(mu);
};

}  // namespace headwise::comm
