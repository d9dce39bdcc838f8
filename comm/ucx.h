// Move-only owners over UCP handles (context, worker, endpoint, registered
// memory, remote key) and the one place ucs_status_t becomes absl::Status.
// Lifetimes nest: context > worker > endpoint > remote key, and context >
// memory; owners hold raw parent handles, so destroy children first.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace headwise::comm {

// OK for UCS_OK; otherwise a Status naming `call` with ucs_status_string().
// Peer/connection failures map to UNAVAILABLE, UCS_ERR_TIMED_OUT to
// DEADLINE_EXCEEDED, UCS_ERR_CANCELED to CANCELLED, bad parameters to
// INVALID_ARGUMENT, no memory/resources to RESOURCE_EXHAUSTED.
absl::Status UcsStatus(ucs_status_t status, std::string_view call);

// Evaluates a UCS/UCP call returning ucs_status_t; on failure returns the
// Status from the enclosing function, naming the call's source text.
#define HEADWISE_UCS_RETURN_IF_ERROR(expr)                                        \
  do {                                                                            \
    if (const ucs_status_t headwise_ucs_rc_ = (expr); headwise_ucs_rc_ != UCS_OK) \
      return ::headwise::comm::UcsStatus(headwise_ucs_rc_, #expr);                \
  } while (false)

// A UCP context (ucp_init / ucp_cleanup). Transports come from UCX_* environment
// variables as usual (e.g. UCX_TLS=tcp across network namespaces).
class UcxContext {
 public:
  struct Options {
    uint64_t features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
    // Bytes reserved in front of each request for the caller (request_size).
    size_t request_size = 0;
    // Set when several workers of this context are used from different threads.
    bool mt_workers_shared = false;
  };
  static absl::StatusOr<UcxContext> Create(const Options& options);
  static absl::StatusOr<UcxContext> Create() { return Create(Options{}); }

  UcxContext(UcxContext&& other) noexcept;
  UcxContext& operator=(UcxContext&& other) noexcept;
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;
  ~UcxContext();

  ucp_context_h get() const { return context_; }

 private:
  explicit UcxContext(ucp_context_h context) : context_(context) {}
  ucp_context_h context_ = nullptr;
};

// A UCP worker: the progress engine. kMulti lets several threads use the
// worker (one thread progressing for a memory rank while another issues
// RMA); kSingle is cheaper when one thread does everything. The mode granted
// is queried back (thread_mode()). Progress() is what makes remote RMA into
// this rank's memory complete: a memory rank must call it continuously.
class UcxWorker {
 public:
  enum class ThreadMode { kSingle, kMulti };
  static absl::StatusOr<UcxWorker> Create(const UcxContext& context,
                                          ThreadMode mode = ThreadMode::kMulti);

  UcxWorker(UcxWorker&& other) noexcept;
  UcxWorker& operator=(UcxWorker&& other) noexcept;
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;
  ~UcxWorker();

  ucp_worker_h get() const { return worker_; }
  ThreadMode thread_mode() const { return mode_; }

  // This worker's address, to hand to peers (e.g. with AllgatherBlobs).
  absl::StatusOr<std::vector<std::byte>> Address() const;

  // One ucp_worker_progress(); returns the number of events processed.
  unsigned Progress() { return ucp_worker_progress(worker_); }

 private:
  UcxWorker(ucp_worker_h worker, ThreadMode mode) : worker_(worker), mode_(mode) {}
  ucp_worker_h worker_ = nullptr;
  ThreadMode mode_ = ThreadMode::kSingle;
};

// An endpoint to a peer worker. With ErrorMode::kPeer (the default) the
// transport watches the peer: when it is gone the error callback records the
// status, failure() returns it (UNAVAILABLE) and outstanding operations
// complete with errors. The worker must outlive the endpoint.
class UcxEndpoint {
 public:
  // kPeer: UCP_ERR_HANDLING_MODE_PEER. UCX 1.13 then refuses transports
  // without peer-failure support (sysv/posix shared memory), so two ranks on
  // one host talk over tcp with RMA emulated on active messages (~0.2-0.6
  // GB/s here). kNone keeps shared memory + cma (GB/s) but a dead peer only
  // shows up as DEADLINE_EXCEEDED from the blocking helpers.
  enum class ErrorMode { kPeer, kNone };

  // `peer_name` (e.g. "rank 3") is used in error messages.
  static absl::StatusOr<UcxEndpoint> Connect(UcxWorker& worker,
                                             std::span<const std::byte> peer_address,
                                             std::string peer_name,
                                             ErrorMode mode = ErrorMode::kPeer);

  UcxEndpoint(UcxEndpoint&& other) noexcept;
  UcxEndpoint& operator=(UcxEndpoint&& other) noexcept;
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;
  // Closes with kDefaultCloseTimeout, logging a failure.
  ~UcxEndpoint();

  static constexpr absl::Duration kDefaultCloseTimeout = absl::Seconds(2);

  ucp_ep_h get() const { return ep_; }
  ucp_worker_h worker() const { return worker_; }
  const std::string& peer_name() const { return peer_name_; }

  // OK while the peer is healthy; otherwise UNAVAILABLE naming the peer and the
  // status the error callback got. Thread-safe.
  absl::Status failure() const;

  // Closes the endpoint, progressing the worker until done or `timeout`. A
  // healthy endpoint is flushed first (the peer should be progressing too); a
  // failed one, or `force`, is closed without flushing (outstanding operations
  // are cancelled). Idempotent. DEADLINE_EXCEEDED leaves the close running
  // inside UCX; the worker's destruction finishes it.
  absl::Status Close(absl::Duration timeout, bool force = false);

 private:
  struct State {
    std::atomic<ucs_status_t> error{UCS_OK};
  };
  static void OnError(void* arg, ucp_ep_h ep, ucs_status_t status);

  UcxEndpoint(ucp_worker_h worker, std::string peer_name)
      : worker_(worker), peer_name_(std::move(peer_name)), state_(std::make_unique<State>()) {}

  ucp_worker_h worker_ = nullptr;
  std::string peer_name_;
  ucp_ep_h ep_ = nullptr;
  // Heap-allocated so the error callback's argument survives moves.
  std::unique_ptr<State> state_;
};

// Memory registered with a context for RMA (ucp_mem_map / ucp_mem_unmap):
// either an existing buffer (which must outlive this owner) or memory UCX
// allocates and frees. The context must outlive it.
class UcxMemory {
 public:
  static absl::StatusOr<UcxMemory> Map(const UcxContext& context, void* address, size_t bytes);
  static absl::StatusOr<UcxMemory> Allocate(const UcxContext& context, size_t bytes);

  UcxMemory(UcxMemory&& other) noexcept;
  UcxMemory& operator=(UcxMemory&& other) noexcept;
  UcxMemory(const UcxMemory&) = delete;
  UcxMemory& operator=(const UcxMemory&) = delete;
  ~UcxMemory();

  ucp_mem_h get() const { return memh_; }
  void* address() const { return address_; }
  size_t size() const { return size_; }
  // The remote address peers use for this memory (its virtual address).
  uint64_t remote_address() const { return reinterpret_cast<uintptr_t>(address_); }

  // The packed remote key peers unpack with UcxRemoteKey::Unpack.
  absl::StatusOr<std::vector<std::byte>> PackRkey() const;

 private:
  UcxMemory(ucp_context_h context, ucp_mem_h memh, void* address, size_t size)
      : context_(context), memh_(memh), address_(address), size_(size) {}
  void Reset();

  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  void* address_ = nullptr;
  size_t size_ = 0;
};

// A peer's memory key unpacked on one endpoint (ucp_ep_rkey_unpack /
// ucp_rkey_destroy); valid only with that endpoint, which must outlive it.
class UcxRemoteKey {
 public:
  static absl::StatusOr<UcxRemoteKey> Unpack(const UcxEndpoint& ep,
                                             std::span<const std::byte> packed);

  UcxRemoteKey(UcxRemoteKey&& other) noexcept;
  UcxRemoteKey& operator=(UcxRemoteKey&& other) noexcept;
  UcxRemoteKey(const UcxRemoteKey&) = delete;
  UcxRemoteKey& operator=(const UcxRemoteKey&) = delete;
  ~UcxRemoteKey();

  ucp_rkey_h get() const { return rkey_; }

 private:
  explicit UcxRemoteKey(ucp_rkey_h rkey) : rkey_(rkey) {}
  ucp_rkey_h rkey_ = nullptr;
};

}  // namespace headwise::comm
