// UcxTransport: one UCP worker per rank driven by a progress thread; RMA
// requests are polled with ucp_request_check_status (no callbacks into our
// frames), active messages carry calls (request id 21, reply id 22). What a
// request still in flight may touch after its ticket is given up (send
// buffers, rendezvous receive buffers) is parked until the worker is gone.
// This file: set-up (pool, start-up blobs, endpoints and the error-mode
// agreement), tear-down, the progress thread and the public wrappers; the
// operations are in ucx_transport_ops.cc.
#include "comm/ucx_transport.h"

#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "comm/mpi.h"
#include "comm/ucx_transport_impl.h"
#include "spdlog/spdlog.h"
#include "ucs/debug/log_def.h"

namespace headwise::comm {
namespace {

using ucx_detail::Backoff;
using ucx_detail::BlobHeader;
using ucx_detail::kReplyAmId;
using ucx_detail::kRequestAmId;

namespace {

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

}  // namespace

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
