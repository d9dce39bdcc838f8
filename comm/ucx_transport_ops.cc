// UcxTransport's operations: active messages (calls and replies), the
// coordinator's RMA and calls with their tickets, and the memory rank's
// serving loop. Set-up, tear-down and the public wrappers are in
// ucx_transport.cc.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "comm/ucx_transport_impl.h"

namespace headwise::comm {

using ucx_detail::Backoff;
using ucx_detail::kReplyAmId;
using ucx_detail::kRequestAmId;

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

}  // namespace headwise::comm
