// Blocking RMA helpers over ucp_{get,put,ep_flush}_nbx. Completion is polled
// with ucp_request_check_status (no callbacks), so a timed-out request can be
// handed back with ucp_request_free without leaving a callback pointing into
// this stack frame.
#include "comm/ucx_rma.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace headwise::comm {
namespace {

ucp_request_param_t RmaParam(ucp_mem_h local_memh) {
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  if (local_memh != nullptr) {
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
    param.memh = local_memh;
  }
  return param;
}

// The endpoint's recorded failure, if any, says more than a bare error code.
absl::Status PreferPeerFailure(const UcxEndpoint& ep, absl::Status status) {
  if (status.ok() || absl::IsDeadlineExceeded(status)) return status;
  if (absl::Status failure = ep.failure(); !failure.ok()) {
    return absl::UnavailableError(absl::StrCat(status.message(), "; ", failure.message()));
  }
  return status;
}

absl::Status CheckUsable(const UcxEndpoint& ep, std::string_view what) {
  if (ep.get() == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(std::string(what), ": endpoint is closed"));
  }
  return ep.failure();
}

}  // namespace

absl::Status WaitRequest(ucp_worker_h worker, ucs_status_ptr_t request, absl::Time deadline,
                         std::string_view call) {
  if (request == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(request)) return UcsStatus(UCS_PTR_STATUS(request), call);
  ucs_status_t status;
  unsigned spins = 0;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
    // The clock is read every few spins: cheap, and still a bounded wait.
    if (++spins % 16 == 0 && absl::Now() >= deadline) {
      ucp_request_free(request);  // completes inside UCX later, silently
      return absl::DeadlineExceededError(
          absl::StrCat(std::string(call),
                       " did not complete before its deadline (is the peer progressing "
                       "its UCX worker?)"));
    }
  }
  ucp_request_free(request);
  return UcsStatus(status, call);
}

absl::Status Get(UcxEndpoint& ep, void* local, size_t bytes, uint64_t remote_address,
                 const UcxRemoteKey& rkey, absl::Duration timeout, ucp_mem_h local_memh) {
  const std::string call = absl::StrCat("ucp_get_nbx(", bytes, " bytes at 0x",
                                        absl::Hex(remote_address), " of ", ep.peer_name(), ")");
  if (absl::Status s = CheckUsable(ep, call); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  const ucp_request_param_t param = RmaParam(local_memh);
  return PreferPeerFailure(
      ep, WaitRequest(ep.worker(),
                      ucp_get_nbx(ep.get(), local, bytes, remote_address, rkey.get(), &param),
                      deadline, call));
}

absl::Status Put(UcxEndpoint& ep, const void* local, size_t bytes, uint64_t remote_address,
                 const UcxRemoteKey& rkey, absl::Duration timeout, ucp_mem_h local_memh) {
  const std::string call = absl::StrCat("ucp_put_nbx(", bytes, " bytes to 0x",
                                        absl::Hex(remote_address), " of ", ep.peer_name(), ")");
  if (absl::Status s = CheckUsable(ep, call); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  const ucp_request_param_t param = RmaParam(local_memh);
  absl::Status status = WaitRequest(
      ep.worker(), ucp_put_nbx(ep.get(), local, bytes, remote_address, rkey.get(), &param),
      deadline, call);
  if (status.ok()) {
    const ucp_request_param_t flush_param = RmaParam(nullptr);
    status = WaitRequest(ep.worker(), ucp_ep_flush_nbx(ep.get(), &flush_param), deadline,
                         absl::StrCat("ucp_ep_flush_nbx after ", call));
  }
  return PreferPeerFailure(ep, status);
}

absl::Status Flush(UcxEndpoint& ep, absl::Duration timeout) {
  const std::string call = absl::StrCat("ucp_ep_flush_nbx(", ep.peer_name(), ")");
  if (absl::Status s = CheckUsable(ep, call); !s.ok()) return s;
  const ucp_request_param_t param = RmaParam(nullptr);
  return PreferPeerFailure(ep, WaitRequest(ep.worker(), ucp_ep_flush_nbx(ep.get(), &param),
                                           absl::Now() + timeout, call));
}

}  // namespace headwise::comm
