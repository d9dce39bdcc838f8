// Blocking one-sided RMA over UCP (get, put, flush) with a deadline: each call
// posts the non-blocking op and progresses the endpoint's worker until it
// completes, fails, or times out. Never an unbounded wait on a silent peer.
// The TARGET's worker must be progressed meanwhile (UcxWorker::Progress).
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "comm/ucx.h"

namespace headwise::comm {

// Waits for a request returned by a *_nbx call: null (done at once), an error
// pointer, or a request to poll. Progresses `worker` until the request
// completes or `deadline` passes; always releases the request. On
// DEADLINE_EXCEEDED the operation continues inside UCX: buffers it uses stay
// in use until the endpoint is closed (force) or the worker destroyed.
absl::Status WaitRequest(ucp_worker_h worker, ucs_status_ptr_t request, absl::Time deadline,
                         std::string_view call);

// Reads `bytes` at `remote_address` (under `rkey`, unpacked on `ep`) into
// `local`. Returns when the data is in `local`. Errors: UNAVAILABLE if the
// peer failed (before or during), DEADLINE_EXCEEDED after `timeout` (see
// WaitRequest about buffers), others from UCX. `local_memh`, if given, is a
// registration covering `local` (saves UCX registering it on the fly).
absl::Status Get(UcxEndpoint& ep, void* local, size_t bytes, uint64_t remote_address,
                 const UcxRemoteKey& rkey, absl::Duration timeout, ucp_mem_h local_memh = nullptr);

// Writes `bytes` from `local` to `remote_address` and flushes the endpoint,
// so on OK the data is visible in the target's memory (not just that `local`
// may be reused). Errors as Get.
absl::Status Put(UcxEndpoint& ep, const void* local, size_t bytes, uint64_t remote_address,
                 const UcxRemoteKey& rkey, absl::Duration timeout, ucp_mem_h local_memh = nullptr);

// Completes every operation issued on `ep` so far, at the target too.
absl::Status Flush(UcxEndpoint& ep, absl::Duration timeout);

}  // namespace headwise::comm
