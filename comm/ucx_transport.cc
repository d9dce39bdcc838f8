// UcxTransport: one UCP worker per rank driven by a progress thread; RMA
// requests are polled with ucp_request_check_status (no callbacks into our
// frames), active messages carry calls (request id 21, reply id 22). What a
// request still in flight may touch after its ticket is given up (send
// buffers, rendezvous receive buffers) is parked until the worker is gone.
#include "comm/ucx_transport.h"

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

namespace headwise::comm {
namespace {

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

absl::StatusOr<PeerBlob> ParseBlob(std::span<const std::byte> blob, int rank) {
  PeerBlob out;
  const auto bad = [&] {
    return absl::InternalError(absl::StrCat("UcxTransport: malformed start-up blob from rank ",
                                            rank, " (", blob.size(), " bytes)"));
  };
  if (blob.size() < sizeof(BlobHeader)) return bad();
  std::memcpy(&out.header, blob.data(), sizeof(BlobHeader));
  const BlobHeader& h = out.header;
  if (blob.size() != sizeof(BlobHeader) + size_t{h.address_bytes} + h.rkey_bytes + h.host_bytes) {
    return bad();
  }
  size_t at = sizeof(BlobHeader);
  out.address = blob.subspan(at, h.address_bytes);
  at += h.address_bytes;
  out.rkey = blob.subspan(at, h.rkey_bytes);
  at += h.rkey_bytes;
  out.host.assign(reinterpret_cast<const char*>(blob.data() + at), h.host_bytes);
  return out;
}

// Collective: true on every rank iff `ok` on every rank.
absl::StatusOr<bool> AllAgree(bool ok, MPI_Comm comm) {
  int mine = ok ? 1 : 0, all = 0;
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm));
  return all == 1;
}

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

std::string RankName(int rank) { return absl::StrCat("rank ", rank); }

// While kAuto tries peer error handling, UCX logs an ERROR per endpoint it
// cannot create that way ("... - no peer failure handler"); the fallback is
// expected, so those lines are dropped. Everything else passes through.
ucs_log_func_rc_t DropNoPeerFailureHandler(const char* /*file*/, unsigned /*line*/,
                                           const char* /*function*/, ucs_log_level_t /*level*/,
                                           const ucs_log_component_config_t* /*config*/,
                                           const char* format, va_list args) {
  char text[1024];
  va_list copy;
  va_copy(copy, args);
  std::vsnprintf(text, sizeof(text), format, copy);
  va_end(copy);
  return std::strstr(text, "no peer failure handler") != nullptr ? UCS_LOG_FUNC_RC_STOP
                                                                 : UCS_LOG_FUNC_RC_CONTINUE;
}

}  // namespace

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

// ---- Set-up and tear-down ---------------------------------------------------

absl::Status UcxTransport::Impl::SetUpLocal() {
  if (options.pool_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("UcxTransport: pool_bytes must be >= 0, got ", options.pool_bytes));
  }
  if (options.peer_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("UcxTransport: peer_timeout must be positive");
  }
  UcxContext::Options context_options;
  context_options.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  absl::StatusOr<UcxContext> ctx = UcxContext::Create(context_options);
  if (!ctx.ok()) return ctx.status();
  context.emplace(std::move(*ctx));
  absl::StatusOr<UcxWorker> w = UcxWorker::Create(*context, UcxWorker::ThreadMode::kMulti);
  if (!w.ok()) return w.status();
  worker.emplace(std::move(*w));
  if (ucp_worker_get_efd(worker->get(), &efd) != UCS_OK) efd = -1;

  for (const auto& [id, cb] :
       {std::pair{kRequestAmId, &Impl::OnRequestAm}, std::pair{kReplyAmId, &Impl::OnReplyAm}}) {
    ucp_am_handler_param_t param;
    std::memset(&param, 0, sizeof(param));
    param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                       UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    param.id = id;
    param.flags = UCP_AM_FLAG_WHOLE_MSG;
    param.cb = cb;
    param.arg = this;
    HEADWISE_UCS_RETURN_IF_ERROR(ucp_worker_set_am_recv_handler(worker->get(), &param));
  }

  if (options.pool_bytes > 0) {
    pool_size = static_cast<size_t>(options.pool_bytes);
    void* mapped = mmap(nullptr, pool_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) {
      const int err = errno;
      pool_size = 0;
      return absl::ResourceExhaustedError(absl::StrCat(
          "UcxTransport: mmap of a ", options.pool_bytes, "-byte pool failed: ", strerror(err)));
    }
    pool = mapped;
    absl::StatusOr<UcxMemory> memory = UcxMemory::Map(*context, pool, pool_size);
    if (!memory.ok()) return memory.status();
    pool_memory.emplace(std::move(*memory));
    absl::StatusOr<std::vector<std::byte>> rkey = pool_memory->PackRkey();
    if (!rkey.ok()) return rkey.status();
    packed_rkey = std::move(*rkey);
  }
  traffic.assign(size, PeerTraffic{});
  endpoints.resize(size);
  rkeys.resize(size);
  lost.assign(size, absl::OkStatus());
  progress_thread = std::thread([this] { ProgressLoop(); });
  return absl::OkStatus();
}

absl::Status UcxTransport::Impl::Connect(const std::vector<PeerBlob>& blobs, ErrorMode with) {
  const UcxEndpoint::ErrorMode ep_mode =
      with == ErrorMode::kPeer ? UcxEndpoint::ErrorMode::kPeer : UcxEndpoint::ErrorMode::kNone;
  for (int r = 0; r < size; ++r) {
    if (r == rank || (rank != 0 && r != 0)) continue;
    absl::StatusOr<UcxEndpoint> ep =
        UcxEndpoint::Connect(*worker, blobs[r].address, RankName(r), ep_mode);
    if (!ep.ok()) return ep.status();
    endpoints[r].emplace(std::move(*ep));
    if (blobs[r].header.pool_bytes > 0) {
      absl::StatusOr<UcxRemoteKey> key = UcxRemoteKey::Unpack(*endpoints[r], blobs[r].rkey);
      if (!key.ok()) return key.status();
      rkeys[r].emplace(std::move(*key));
    }
  }
  // Flushing completes wire-up, so a transport that cannot carry this mode
  // fails here rather than at first use. Peers progress on their threads.
  const absl::Time deadline = absl::Now() + options.peer_timeout;
  for (int r = 0; r < size; ++r) {
    if (!endpoints[r]) continue;
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    absl::Status s;
    ucs_status_ptr_t request = ucp_ep_flush_nbx(endpoints[r]->get(), &param);
    if (UCS_PTR_IS_ERR(request)) {
      s = UcsStatus(UCS_PTR_STATUS(request), absl::StrCat("ucp_ep_flush_nbx(", RankName(r), ")"));
    } else if (request != nullptr) {
      Backoff backoff;
      ucs_status_t st;
      while ((st = ucp_request_check_status(request)) == UCS_INPROGRESS && absl::Now() < deadline) {
        backoff.Idle();
      }
      ucp_request_free(request);
      s = st == UCS_INPROGRESS ? absl::UnavailableError(
                                     absl::StrCat(RankName(r), " did not complete wire-up within ",
                                                  absl::FormatDuration(options.peer_timeout)))
                               : UcsStatus(st, absl::StrCat("ucp_ep_flush_nbx(", RankName(r), ")"));
    }
    if (s.ok()) s = endpoints[r]->failure();
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void UcxTransport::Impl::Disconnect(bool force) {
  for (auto& key : rkeys) key.reset();
  for (int r = 0; r < size; ++r) {
    std::optional<UcxEndpoint>& ep = endpoints[r];
    if (!ep) continue;
    // A lost kNone peer never completes a flush: do not wait long for it.
    const absl::Duration timeout =
        lost[r].ok() ? std::min(options.peer_timeout, absl::Seconds(2)) : absl::Milliseconds(100);
    // A peer that closed first resets the connection: expected at shutdown,
    // as is a lost peer's endpoint not closing (its loss was reported).
    if (absl::Status s = ep->Close(timeout, force); absl::IsUnavailable(s) || !lost[r].ok()) {
      spdlog::debug("UcxTransport rank {}: {}", rank, s.ToString());
    } else if (!s.ok()) {
      spdlog::warn("UcxTransport rank {}: {}", rank, s.ToString());
    }
    ep.reset();
  }
}

UcxTransport::Impl::~Impl() {
  stop.store(true);
  if (progress_thread.joinable()) progress_thread.join();
  // Unwaited tickets: UCX frees their requests when they end; their buffers
  // stay parked until the worker is gone.
  std::vector<std::unique_ptr<Op>> left;
  {
    std::lock_guard lock(mu);
    for (auto& [ticket, op] : ops) left.push_back(std::move(op));
    ops.clear();
  }
  for (auto& op : left) {
    for (void* request : op->requests) ucp_request_free(request);
    op->requests.clear();
  }
  if (worker) Disconnect(/*force=*/false);
  pool_memory.reset();
  if (pool != nullptr && munmap(pool, pool_size) != 0) {
    spdlog::error("UcxTransport rank {}: munmap of the pool failed: {}", rank, strerror(errno));
  }
  worker.reset();
  context.reset();
  // `left`, pending_recvs and the abandoned buffers go after the worker.
}

// Runs from Create to destruction: progress while there is work; when idle,
// arm the worker's event fd and sleep on it for at most 1 ms.
void UcxTransport::Impl::ProgressLoop() {
  int idle = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    if (worker->Progress() != 0) {
      idle = 0;
      continue;
    }
    if (++idle < 32) continue;
    idle = 0;
    if (efd >= 0) {
      const ucs_status_t armed = ucp_worker_arm(worker->get());
      if (armed == UCS_ERR_BUSY) continue;  // events arrived meanwhile
      if (armed == UCS_OK) {
        pollfd fd{efd, POLLIN, 0};
        poll(&fd, 1, /*timeout_ms=*/1);
        continue;
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// ---- Active messages (UCX callbacks: nothing may throw out of them) --------

ucs_status_t UcxTransport::Impl::OnRequestAm(void* arg, const void* header, size_t header_length,
                                             void* data, size_t length,
                                             const ucp_am_recv_param_t* param) {
  return static_cast<Impl*>(arg)->OnAm(true, header, header_length, data, length, param);
}

ucs_status_t UcxTransport::Impl::OnReplyAm(void* arg, const void* header, size_t header_length,
                                           void* data, size_t length,
                                           const ucp_am_recv_param_t* param) {
  return static_cast<Impl*>(arg)->OnAm(false, header, header_length, data, length, param);
}

ucs_status_t UcxTransport::Impl::OnAm(bool is_request, const void* header, size_t header_length,
                                      void* data, size_t length,
                                      const ucp_am_recv_param_t* param) noexcept {
  ReplyHeader h;
  if (is_request ? header_length != sizeof(uint64_t) : header_length != sizeof(ReplyHeader)) {
    return UCS_OK;  // not ours: drop
  }
  std::memcpy(&h, header, header_length);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  try {
    if (!rndv) {
      const std::span<const std::byte> bytes(static_cast<const std::byte*>(data), length);
      if (is_request) {
        DeliverRequest({h.call_id, absl::OkStatus(), {bytes.begin(), bytes.end()}});
      } else {
        DeliverReply(h, bytes, nullptr, absl::OkStatus());
      }
      return UCS_OK;
    }
    auto recv = std::make_unique<PendingRecv>();
    recv->impl = this;
    recv->is_request = is_request;
    recv->header = h;
    recv->buffer.resize(length);
    PendingRecv* raw = recv.get();
    {
      std::lock_guard lock(mu);
      raw->id = next_recv_id++;
      pending_recvs.emplace(raw->id, std::move(recv));
    }
    ucp_request_param_t rp;
    std::memset(&rp, 0, sizeof(rp));
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am = &Impl::OnRecvDone;
    rp.user_data = raw;
    ucs_status_ptr_t request =
        ucp_am_recv_data_nbx(worker->get(), data, raw->buffer.data(), length, &rp);
    if (request == nullptr) {
      FinishRecv(raw, UCS_OK);
    } else if (UCS_PTR_IS_ERR(request)) {
      FinishRecv(raw, UCS_PTR_STATUS(request));
    }  // else OnRecvDone finishes it
    return UCS_OK;
  } catch (const std::exception& e) {
    spdlog::error("UcxTransport rank {}: dropping a message: {}", rank, e.what());
    // A refused rendezvous fails the sender's send with this status.
    return rndv ? UCS_ERR_NO_MEMORY : UCS_OK;
  }
}

void UcxTransport::Impl::OnRecvDone(void* request, ucs_status_t status, size_t /*length*/,
                                    void* user_data) {
  ucp_request_free(request);
  auto* recv = static_cast<PendingRecv*>(user_data);
  recv->impl->FinishRecv(recv, status);
}

void UcxTransport::Impl::FinishRecv(PendingRecv* raw, ucs_status_t status) noexcept {
  std::unique_ptr<PendingRecv> recv;
  {
    std::lock_guard lock(mu);
    auto it = pending_recvs.find(raw->id);
    if (it == pending_recvs.end()) return;
    recv = std::move(it->second);
    pending_recvs.erase(it);
  }
  try {
    const absl::Status error =
        UcsStatus(status, absl::StrCat("receiving a ", recv->buffer.size(), "-byte ",
                                       recv->is_request ? "request" : "reply"));
    if (recv->is_request) {
      DeliverRequest({recv->header.call_id, error,
                      error.ok() ? std::move(recv->buffer) : std::vector<std::byte>{}});
    } else {
      DeliverReply(recv->header, recv->buffer, &recv->buffer, error);
    }
  } catch (const std::exception& e) {
    spdlog::error("UcxTransport rank {}: dropping a message: {}", rank, e.what());
  }
}

void UcxTransport::Impl::DeliverRequest(IncomingRequest request) {
  {
    std::lock_guard lock(mu);
    incoming.push_back(std::move(request));
  }
  incoming_cv.notify_one();
}

// `owned`, if set, holds `data` and may be moved from.
void UcxTransport::Impl::DeliverReply(const ReplyHeader& header, std::span<const std::byte> data,
                                      std::vector<std::byte>* owned, absl::Status transfer_error) {
  std::lock_guard lock(mu);
  auto it = ops.find(header.call_id);
  if (it == ops.end() || it->second->kind != Op::Kind::kCall) return;  // given up: drop
  Op& op = *it->second;
  traffic[op.rank].bytes_received += static_cast<int64_t>(data.size());
  if (!transfer_error.ok()) {
    op.reply_status = absl::UnavailableError(
        absl::StrCat(RankName(op.rank), ": ", std::string(transfer_error.message())));
  } else if (header.code != 0) {
    op.reply_status = absl::Status(
        static_cast<absl::StatusCode>(header.code),
        absl::StrCat(RankName(op.rank), ": ",
                     std::string(reinterpret_cast<const char*>(data.data()), data.size())));
  } else if (owned != nullptr) {
    *op.reply = std::move(*owned);
  } else {
    op.reply->assign(data.begin(), data.end());
  }
  op.replied = true;
}

// ---- Coordinator side -------------------------------------------------------

absl::Status UcxTransport::Impl::CheckPeer(int peer, std::string_view what) const {
  if (peer < 0 || peer >= size || (!endpoints[peer] && lost[peer].ok())) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": rank ", rank, " has no endpoint to rank ", peer,
                     " (only rank 0 <-> other ranks, world of ", size, ")"));
  }
  if (!lost[peer].ok()) return lost[peer];
  if (absl::Status f = endpoints[peer]->failure(); !f.ok()) return f;
  return absl::OkStatus();
}

absl::StatusOr<RmaTicket> UcxTransport::Impl::PostRma(Op::Kind kind, int peer,
                                                      std::vector<RmaItem> items) {
  const bool get = kind == Op::Kind::kGet;
  const std::string what = get ? "PostGets" : "PostPuts";
  if (absl::Status s = CheckPeer(peer, what); !s.ok()) return s;
  const uint64_t pool_bytes = static_cast<uint64_t>(peers[peer].pool_bytes);
  for (size_t i = 0; i < items.size(); ++i) {
    const RmaItem& item = items[i];
    if (item.bytes == 0) continue;
    if (item.offset > pool_bytes || item.bytes > pool_bytes - item.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": item ", i, " (offset ", item.offset, ", ", item.bytes, " bytes) lies outside ",
          RankName(peer), "'s pool of ", pool_bytes, " bytes"));
    }
    if (item.local == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": item ", i, " has a null buffer"));
    }
  }
  auto op = std::make_unique<Op>();
  op->kind = kind;
  op->rank = peer;
  ucp_ep_h ep = endpoints[peer]->get();
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  int64_t bytes = 0;
  for (const RmaItem& item : items) {
    if (item.bytes == 0) continue;
    const uint64_t remote = pool_base[peer] + item.offset;
    ucs_status_ptr_t request =
        get ? ucp_get_nbx(ep, item.local, item.bytes, remote, rkeys[peer]->get(), &param)
            : ucp_put_nbx(ep, item.local, item.bytes, remote, rkeys[peer]->get(), &param);
    if (UCS_PTR_IS_ERR(request)) {
      op->error = TransferError(*op, UCS_PTR_STATUS(request));
      break;
    }
    if (request != nullptr) op->requests.push_back(request);
    bytes += static_cast<int64_t>(item.bytes);
  }
  if (!get && bytes > 0 && op->error.ok()) {
    ucs_status_ptr_t request = ucp_ep_flush_nbx(ep, &param);  // puts visible at the target
    if (UCS_PTR_IS_ERR(request)) {
      op->error = TransferError(*op, UCS_PTR_STATUS(request));
    } else if (request != nullptr) {
      op->requests.push_back(request);
    }
  }
  std::lock_guard lock(mu);
  (get ? traffic[peer].bytes_received : traffic[peer].bytes_sent) += bytes;
  const RmaTicket ticket = next_ticket++;
  ops.emplace(ticket, std::move(op));
  return ticket;
}

absl::StatusOr<RmaTicket> UcxTransport::Impl::PostCall(int peer, std::vector<std::byte> request,
                                                       std::vector<std::byte>* reply) {
  if (absl::Status s = CheckPeer(peer, "PostCall"); !s.ok()) return s;
  if (reply == nullptr) return absl::InvalidArgumentError("PostCall: null reply");
  auto owned = std::make_unique<Op>();
  Op* op = owned.get();
  op->kind = Op::Kind::kCall;
  op->rank = peer;
  op->request = std::move(request);
  op->reply = reply;
  RmaTicket ticket;
  {
    // Registered before sending: the reply may come back at once.
    std::lock_guard lock(mu);
    ticket = next_ticket++;
    op->call_id = ticket;
    traffic[peer].bytes_sent += static_cast<int64_t>(op->request.size());
    traffic[peer].calls += 1;
    ops.emplace(ticket, std::move(owned));
  }
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  ucs_status_ptr_t sent =
      ucp_am_send_nbx(endpoints[peer]->get(), kRequestAmId, &op->call_id, sizeof(op->call_id),
                      op->request.data(), op->request.size(), &param);
  if (UCS_PTR_IS_ERR(sent)) {
    op->error = TransferError(*op, UCS_PTR_STATUS(sent));
  } else if (sent != nullptr) {
    op->requests.push_back(sent);
  }
  return ticket;
}

absl::Status UcxTransport::Impl::TransferError(const Op& op, ucs_status_t status) const {
  const char* what = op.kind == Op::Kind::kGet   ? "ucp_get_nbx"
                     : op.kind == Op::Kind::kPut ? "ucp_put_nbx/flush"
                                                 : "ucp_am_send_nbx (call)";
  absl::Status s = UcsStatus(status, absl::StrCat(RankName(op.rank), ": ", what));
  if (endpoints[op.rank]) {
    if (absl::Status f = endpoints[op.rank]->failure(); !f.ok()) {
      return absl::UnavailableError(absl::StrCat(s.message(), "; ", f.message()));
    }
  }
  return s;
}

UcxTransport::Impl::Op* UcxTransport::Impl::FindOp(RmaTicket ticket) {
  std::lock_guard lock(mu);
  auto it = ops.find(ticket);
  return it == ops.end() ? nullptr : it->second.get();
}

// Reaps finished requests; true once the op is over (Retire says how).
bool UcxTransport::Impl::Check(Op& op) {
  for (size_t i = 0; i < op.requests.size();) {
    const ucs_status_t status = ucp_request_check_status(op.requests[i]);
    if (status == UCS_INPROGRESS) {
      ++i;
      continue;
    }
    ucp_request_free(op.requests[i]);
    op.requests.erase(op.requests.begin() + static_cast<ptrdiff_t>(i));
    ++op.events;
    if (status != UCS_OK && op.error.ok()) op.error = TransferError(op, status);
  }
  bool replied = false;
  if (op.kind == Op::Kind::kCall) {
    std::lock_guard lock(mu);
    replied = op.replied;
  }
  if (replied && !op.reply_seen) {
    op.reply_seen = true;
    ++op.events;
  }
  if (!op.requests.empty()) return false;
  if (!op.error.ok() || op.kind != Op::Kind::kCall || replied) return true;
  // Sent, not answered: a failed (or cut-off) endpoint will never answer.
  if (absl::Status f = !lost[op.rank].ok() ? lost[op.rank] : endpoints[op.rank]->failure();
      !f.ok()) {
    op.error = f;
    return true;
  }
  return false;
}

absl::Status UcxTransport::Impl::Retire(RmaTicket ticket) {
  std::lock_guard lock(mu);
  auto it = ops.find(ticket);
  absl::Status status = it->second->error;
  if (status.ok() && it->second->kind == Op::Kind::kCall) status = it->second->reply_status;
  ops.erase(it);
  return status;
}

absl::Status UcxTransport::Impl::Abandon(RmaTicket ticket) {
  std::unique_ptr<Op> op;
  {
    std::lock_guard lock(mu);
    auto it = ops.find(ticket);
    op = std::move(it->second);
    ops.erase(it);  // a late reply finds nothing and is dropped
  }
  const char* what = op->kind == Op::Kind::kGet   ? "get"
                     : op->kind == Op::Kind::kPut ? "put"
                                                  : "call";
  absl::Status status = absl::UnavailableError(absl::StrCat(
      RankName(op->rank), " did not answer within ", absl::FormatDuration(options.peer_timeout),
      " (", what, ", ticket ", ticket, ")"));
  for (void* request : op->requests) ucp_request_free(request);  // UCX frees them when they end
  if (op->kind != Op::Kind::kCall && !op->requests.empty()) {
    // The transfer could still touch the caller's buffers: cut the rank off.
    // With peer error handling a forced close cancels what is in flight; UCX
    // cannot force-close kNone endpoints, which then wait for destruction.
    const int peer = op->rank;
    lost[peer] = absl::UnavailableError(
        absl::StrCat(RankName(peer), " was cut off after: ", std::string(status.message())));
    if (mode == ErrorMode::kPeer) {
      if (absl::Status s = endpoints[peer]->Close(absl::Seconds(1), /*force=*/true); !s.ok()) {
        spdlog::warn("UcxTransport rank {}: {}", rank, s.ToString());
      }
      endpoints[peer].reset();
      rkeys[peer].reset();
    }
  }
  op->requests.clear();
  std::lock_guard lock(mu);
  abandoned_ops.push_back(std::move(op));  // a send in flight may still read its bytes
  return status;
}

// ---- Memory-rank side -------------------------------------------------------

absl::Status UcxTransport::Impl::Serve(const CallHandler& handler) {
  if (rank == 0 || !endpoints[0]) {
    return absl::FailedPreconditionError(
        absl::StrCat("Serve: rank ", rank, " is not a memory rank with an endpoint to rank 0"));
  }
  while (true) {
    IncomingRequest in;
    {
      std::unique_lock lock(mu);
      while (incoming.empty()) {
        if (absl::Status f = endpoints[0]->failure(); !f.ok()) {
          return absl::UnavailableError(
              absl::StrCat(RankName(rank), " lost the coordinator: ", std::string(f.message())));
        }
        incoming_cv.wait_for(lock, std::chrono::milliseconds(20));
      }
      in = std::move(incoming.front());
      incoming.pop_front();
    }
    absl::StatusOr<CallReply> reply = absl::InternalError("call handler not run");
    if (!in.status.ok()) {
      reply = in.status;
    } else {
      try {
        reply = handler(in.bytes);
      } catch (const std::exception& e) {
        reply = absl::InternalError(absl::StrCat("call handler threw: ", e.what()));
      }
    }
    const bool stop_serving = reply.ok() && reply->stop_serving;
    if (absl::Status s = SendReply(in.call_id, std::move(reply)); !s.ok()) return s;
    if (stop_serving) return absl::OkStatus();
  }
}

absl::Status UcxTransport::Impl::SendReply(uint64_t call_id, absl::StatusOr<CallReply> reply) {
  auto out = std::make_unique<OutgoingReply>();
  out->header.call_id = call_id;
  if (reply.ok()) {
    out->bytes = std::move(reply->bytes);
  } else {
    out->header.code = static_cast<int32_t>(reply.status().code());
    const auto* text = reinterpret_cast<const std::byte*>(reply.status().message().data());
    out->bytes.assign(text, text + reply.status().message().size());
  }
  UcxEndpoint& ep = *endpoints[0];
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  ucs_status_ptr_t request =
      ucp_am_send_nbx(ep.get(), kReplyAmId, &out->header, sizeof(out->header), out->bytes.data(),
                      out->bytes.size(), &param);
  const auto failed = [&](ucs_status_t status) {
    absl::Status s = UcsStatus(status, absl::StrCat(RankName(rank), ": reply to call ", call_id));
    absl::Status f = ep.failure();
    return absl::UnavailableError(
        absl::StrCat(s.message(), f.ok() ? "" : "; ", std::string(f.message())));
  };
  if (UCS_PTR_IS_ERR(request)) return failed(UCS_PTR_STATUS(request));
  if (request == nullptr) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + options.peer_timeout;
  Backoff backoff;
  ucs_status_t status;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    if (absl::Now() >= deadline) {
      ucp_request_free(request);
      std::lock_guard lock(mu);
      abandoned_replies.push_back(std::move(out));
      return absl::UnavailableError(
          absl::StrCat(RankName(rank), ": rank 0 did not take the reply to call ", call_id,
                       " within ", absl::FormatDuration(options.peer_timeout)));
    }
    if (worker->Progress() != 0) {
      backoff.Reset();
    } else {
      backoff.Idle();
    }
  }
  ucp_request_free(request);
  return status == UCS_OK ? absl::OkStatus() : failed(status);
}

// ---- UcxTransport -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Create(
    MPI_Comm parent, const UcxTransportOptions& options) {
  absl::StatusOr<MpiComm> comm = MpiComm::Dup(parent);
  if (!comm.ok()) return comm.status();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->rank = comm->rank();
  impl->size = comm->size();
  const int rank = impl->rank;
  const auto elsewhere = [rank](std::string_view step) {
    return absl::UnavailableError(absl::StrCat("UcxTransport::Create: ", std::string(step),
                                               " failed on another rank (rank ", rank,
                                               " was fine)"));
  };

  absl::Status local = impl->SetUpLocal();
  absl::StatusOr<bool> all = AllAgree(local.ok(), comm->get());
  if (!all.ok()) return all.status();
  if (!local.ok()) return local;
  if (!*all) return elsewhere("local set-up");

  // One blob per rank: header, worker address, packed rkey, hostname.
  absl::StatusOr<std::vector<std::byte>> address = impl->worker->Address();
  if (!address.ok()) return address.status();  // deterministic enough: UCX itself is broken
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "?");
  const std::string hostname(host);
  BlobHeader header;
  header.pool_base = reinterpret_cast<uintptr_t>(impl->pool);
  header.pool_bytes = impl->pool_size;
  header.address_bytes = static_cast<uint32_t>(address->size());
  header.rkey_bytes = static_cast<uint32_t>(impl->packed_rkey.size());
  header.host_bytes = static_cast<uint32_t>(hostname.size());
  std::vector<std::byte> blob(sizeof(header));
  std::memcpy(blob.data(), &header, sizeof(header));
  blob.insert(blob.end(), address->begin(), address->end());
  blob.insert(blob.end(), impl->packed_rkey.begin(), impl->packed_rkey.end());
  const auto* host_bytes = reinterpret_cast<const std::byte*>(hostname.data());
  blob.insert(blob.end(), host_bytes, host_bytes + hostname.size());
  absl::StatusOr<std::vector<std::vector<std::byte>>> blobs = AllgatherBlobs(blob, comm->get());
  if (!blobs.ok()) return blobs.status();
  std::vector<PeerBlob> parsed;
  for (int r = 0; r < impl->size; ++r) {
    absl::StatusOr<PeerBlob> p = ParseBlob((*blobs)[r], r);
    if (!p.ok()) return p.status();  // every rank parses the same blobs
    impl->peers.push_back({p->host, static_cast<int64_t>(p->header.pool_bytes)});
    impl->pool_base.push_back(p->header.pool_base);
    parsed.push_back(std::move(*p));
  }

  // Endpoints: every rank must end up in the same error mode.
  const ErrorMode wanted = options.error_mode;
  ErrorMode mode = wanted == ErrorMode::kNone ? ErrorMode::kNone : ErrorMode::kPeer;
  if (wanted == ErrorMode::kAuto) ucs_log_push_handler(&DropNoPeerFailureHandler);
  absl::Status connected = impl->Connect(parsed, mode);
  if (wanted == ErrorMode::kAuto) ucs_log_pop_handler();
  all = AllAgree(connected.ok(), comm->get());
  if (!all.ok()) return all.status();
  if (!*all && wanted == ErrorMode::kAuto) {
    const std::string reason =
        connected.ok() ? "another rank could not connect" : std::string(connected.message());
    impl->Disconnect(/*force=*/true);
    HEADWISE_MPI_RETURN_IF_ERROR(MPI_Barrier(comm->get()));  // old endpoints gone everywhere
    mode = ErrorMode::kNone;
    connected = impl->Connect(parsed, mode);
    all = AllAgree(connected.ok(), comm->get());
    if (!all.ok()) return all.status();
    if (*all && rank == 0) {
      spdlog::warn(
          "UcxTransport: these UCX transports cannot watch peers ({}); using "
          "UCP_ERR_HANDLING_MODE_NONE: a dead peer is then detected only by --peer-timeout ({})",
          reason, absl::FormatDuration(options.peer_timeout));
    }
  }
  if (!connected.ok()) return connected;
  if (!*all) return elsewhere("connecting endpoints");
  impl->mode = mode;
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(impl)));
}

UcxTransport::UcxTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UcxTransport::~UcxTransport() = default;

int UcxTransport::rank() const { return impl_->rank; }
int UcxTransport::size() const { return impl_->size; }
const std::vector<PeerInfo>& UcxTransport::peers() const { return impl_->peers; }
uint8_t* UcxTransport::pool() { return static_cast<uint8_t*>(impl_->pool); }
absl::Duration UcxTransport::peer_timeout() const { return impl_->options.peer_timeout; }
UcxTransportOptions::ErrorMode UcxTransport::error_mode() const { return impl_->mode; }

absl::StatusOr<RmaTicket> UcxTransport::PostGets(int rank, std::vector<RmaItem> items) {
  return impl_->PostRma(Impl::Op::Kind::kGet, rank, std::move(items));
}

absl::StatusOr<RmaTicket> UcxTransport::PostPuts(int rank, std::vector<RmaItem> items) {
  return impl_->PostRma(Impl::Op::Kind::kPut, rank, std::move(items));
}

absl::StatusOr<RmaTicket> UcxTransport::PostCall(int rank, std::vector<std::byte> request,
                                                 std::vector<std::byte>* reply) {
  return impl_->PostCall(rank, std::move(request), reply);
}

bool UcxTransport::Poll(RmaTicket ticket) {
  Impl::Op* op = impl_->FindOp(ticket);
  if (op == nullptr) return true;  // unknown or retired: Wait says so
  impl_->worker->Progress();
  return impl_->Check(*op);
}

absl::Status UcxTransport::Wait(RmaTicket ticket) {
  Impl::Op* op = impl_->FindOp(ticket);
  if (op == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("Wait: unknown ticket ", ticket, " (never posted or already waited for)"));
  }
  // The deadline moves with progress: peer_timeout bounds silence, not size.
  const absl::Duration timeout = impl_->options.peer_timeout;
  absl::Time deadline = absl::Now() + timeout;
  uint64_t events = op->events;
  Backoff backoff;
  while (!impl_->Check(*op)) {
    const absl::Time now = absl::Now();
    if (op->events != events) {
      events = op->events;
      deadline = now + timeout;
    }
    if (now >= deadline) return impl_->Abandon(ticket);
    if (impl_->worker->Progress() != 0) {
      backoff.Reset();
    } else {
      backoff.Idle();
    }
  }
  return impl_->Retire(ticket);
}

absl::Status UcxTransport::Serve(const CallHandler& handler) { return impl_->Serve(handler); }

PeerTraffic UcxTransport::traffic(int rank) const {
  std::lock_guard lock(impl_->mu);
  if (rank < 0 || rank >= impl_->size) return PeerTraffic{};
  return impl_->traffic[rank];
}

}  // namespace headwise::comm
