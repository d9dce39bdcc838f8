// UCP handle owners and ucs_status_t -> Status. Endpoints use peer error
// handling so a dead peer surfaces as UNAVAILABLE instead of a hang; closing
// progresses the worker with a deadline for the same reason.
#include "comm/ucx.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "comm/ucx_rma.h"
#include "spdlog/spdlog.h"

namespace headwise::comm {

absl::Status UcsStatus(ucs_status_t status, std::string_view call) {
  if (status == UCS_OK) return absl::OkStatus();
  std::string message = absl::StrCat(std::string(call), " failed: ", ucs_status_string(status),
                                     " (", static_cast<int>(status), ")");
  switch (status) {
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_BUSY:
      return absl::UnavailableError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(message);
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_BUFFER_TOO_SMALL:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_OUT_OF_RANGE:
    case UCS_ERR_MESSAGE_TRUNCATED:
      return absl::OutOfRangeError(message);
    case UCS_ERR_UNSUPPORTED:
      return absl::UnimplementedError(message);
    case UCS_ERR_NO_ELEM:
    case UCS_ERR_NO_DEVICE:
      return absl::NotFoundError(message);
    default:
      return absl::InternalError(message);
  }
}

// ---- UcxContext -------------------------------------------------------------

absl::StatusOr<UcxContext> UcxContext::Create(const Options& options) {
  ucp_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask =
      UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = options.features;
  params.request_size = options.request_size;
  params.mt_workers_shared = options.mt_workers_shared ? 1 : 0;
  ucp_context_h context = nullptr;
  // A null config makes UCX read UCX_* from the environment itself.
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_init(&params, nullptr, &context));
  return UcxContext(context);
}

UcxContext::UcxContext(UcxContext&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)) {}

UcxContext& UcxContext::operator=(UcxContext&& other) noexcept {
  if (this != &other) {
    if (context_ != nullptr) ucp_cleanup(context_);
    context_ = std::exchange(other.context_, nullptr);
  }
  return *this;
}

UcxContext::~UcxContext() {
  if (context_ != nullptr) ucp_cleanup(context_);
}

// ---- UcxWorker --------------------------------------------------------------

absl::StatusOr<UcxWorker> UcxWorker::Create(const UcxContext& context, ThreadMode mode) {
  ucp_worker_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = mode == ThreadMode::kMulti ? UCS_THREAD_MODE_MULTI : UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_worker_create(context.get(), &params, &worker));
  UcxWorker out(worker, mode);

  ucp_worker_attr_t attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_worker_query(worker, &attr));
  out.mode_ = attr.thread_mode == UCS_THREAD_MODE_MULTI ? ThreadMode::kMulti : ThreadMode::kSingle;
  if (mode == ThreadMode::kMulti && out.mode_ != ThreadMode::kMulti) {
    return absl::UnimplementedError(
        "ucp_worker_create: UCS_THREAD_MODE_MULTI requested but not granted (UCX built without "
        "--enable-mt?)");
  }
  return out;
}

UcxWorker::UcxWorker(UcxWorker&& other) noexcept
    : worker_(std::exchange(other.worker_, nullptr)), mode_(other.mode_) {}

UcxWorker& UcxWorker::operator=(UcxWorker&& other) noexcept {
  if (this != &other) {
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    worker_ = std::exchange(other.worker_, nullptr);
    mode_ = other.mode_;
  }
  return *this;
}

UcxWorker::~UcxWorker() {
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
}

absl::StatusOr<std::vector<std::byte>> UcxWorker::Address() const {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_worker_get_address(worker_, &address, &length));
  const auto* bytes = reinterpret_cast<const std::byte*>(address);
  std::vector<std::byte> out(bytes, bytes + length);
  ucp_worker_release_address(worker_, address);
  return out;
}

// ---- UcxEndpoint ------------------------------------------------------------

void UcxEndpoint::OnError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  // Runs inside ucp_worker_progress on whichever thread progresses; only
  // record (the first failure wins) and let the owner react.
  auto* state = static_cast<State*>(arg);
  ucs_status_t expected = UCS_OK;
  state->error.compare_exchange_strong(expected, status);
}

absl::StatusOr<UcxEndpoint> UcxEndpoint::Connect(UcxWorker& worker,
                                                 std::span<const std::byte> peer_address,
                                                 std::string peer_name, ErrorMode mode) {
  if (peer_address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("UcxEndpoint::Connect: empty worker address for ", peer_name));
  }
  UcxEndpoint out(worker.get(), std::move(peer_name));
  ucp_ep_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address = reinterpret_cast<const ucp_address_t*>(peer_address.data());
  params.err_mode =
      mode == ErrorMode::kPeer ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  if (mode == ErrorMode::kPeer) {
    params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.err_handler.cb = &UcxEndpoint::OnError;
    params.err_handler.arg = out.state_.get();
  }
  if (ucs_status_t rc = ucp_ep_create(worker.get(), &params, &out.ep_); rc != UCS_OK) {
    out.ep_ = nullptr;
    return UcsStatus(rc, absl::StrCat("ucp_ep_create(", out.peer_name_, ")"));
  }
  return out;
}

UcxEndpoint::UcxEndpoint(UcxEndpoint&& other) noexcept
    : worker_(std::exchange(other.worker_, nullptr)),
      peer_name_(std::move(other.peer_name_)),
      ep_(std::exchange(other.ep_, nullptr)),
      state_(std::move(other.state_)) {}

UcxEndpoint& UcxEndpoint::operator=(UcxEndpoint&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Close(kDefaultCloseTimeout); !s.ok()) {
      spdlog::warn("UcxEndpoint: {}", s.ToString());
    }
    worker_ = std::exchange(other.worker_, nullptr);
    peer_name_ = std::move(other.peer_name_);
    ep_ = std::exchange(other.ep_, nullptr);
    state_ = std::move(other.state_);
  }
  return *this;
}

UcxEndpoint::~UcxEndpoint() {
  if (absl::Status s = Close(kDefaultCloseTimeout); !s.ok()) {
    spdlog::warn("UcxEndpoint: {}", s.ToString());
  }
}

absl::Status UcxEndpoint::failure() const {
  const ucs_status_t error = state_ ? state_->error.load() : UCS_OK;
  if (error == UCS_OK) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("UCX endpoint to ", peer_name_, " failed: ", ucs_status_string(error)));
}

absl::Status UcxEndpoint::Close(absl::Duration timeout, bool force) {
  if (ep_ == nullptr) return absl::OkStatus();
  ucp_ep_h ep = std::exchange(ep_, nullptr);
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = (force || !failure().ok()) ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  absl::Status status = WaitRequest(worker_, ucp_ep_close_nbx(ep, &param), absl::Now() + timeout,
                                    absl::StrCat("ucp_ep_close_nbx(", peer_name_, ")"));
  if (absl::IsDeadlineExceeded(status)) {
    // The close goes on inside UCX and may still call OnError with this
    // state: leak it (a few bytes) rather than leave the callback dangling.
    [[maybe_unused]] State* leaked = state_.release();
  }
  return status;
}

// ---- UcxMemory --------------------------------------------------------------

absl::StatusOr<UcxMemory> UcxMemory::Map(const UcxContext& context, void* address, size_t bytes) {
  if (address == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("UcxMemory::Map: null address or zero length");
  }
  ucp_mem_map_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = address;
  params.length = bytes;
  ucp_mem_h memh = nullptr;
  if (ucs_status_t rc = ucp_mem_map(context.get(), &params, &memh); rc != UCS_OK) {
    return UcsStatus(rc, absl::StrCat("ucp_mem_map(", bytes, " bytes)"));
  }
  return UcxMemory(context.get(), memh, address, bytes);
}

absl::StatusOr<UcxMemory> UcxMemory::Allocate(const UcxContext& context, size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("UcxMemory::Allocate: zero length");
  ucp_mem_map_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = nullptr;
  params.length = bytes;
  params.flags = UCP_MEM_MAP_ALLOCATE;
  ucp_mem_h memh = nullptr;
  if (ucs_status_t rc = ucp_mem_map(context.get(), &params, &memh); rc != UCS_OK) {
    return UcsStatus(rc, absl::StrCat("ucp_mem_map(allocate ", bytes, " bytes)"));
  }
  UcxMemory out(context.get(), memh, nullptr, bytes);
  ucp_mem_attr_t attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_mem_query(memh, &attr));
  out.address_ = attr.address;
  out.size_ = attr.length;
  return out;
}

UcxMemory::UcxMemory(UcxMemory&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)),
      memh_(std::exchange(other.memh_, nullptr)),
      address_(std::exchange(other.address_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

UcxMemory& UcxMemory::operator=(UcxMemory&& other) noexcept {
  if (this != &other) {
    Reset();
    context_ = std::exchange(other.context_, nullptr);
    memh_ = std::exchange(other.memh_, nullptr);
    address_ = std::exchange(other.address_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

UcxMemory::~UcxMemory() { Reset(); }

void UcxMemory::Reset() {
  if (memh_ == nullptr) return;
  if (absl::Status s = UcsStatus(ucp_mem_unmap(context_, memh_), "ucp_mem_unmap"); !s.ok()) {
    spdlog::error("UcxMemory ({} bytes at {}): {}", size_, address_, s.ToString());
  }
  memh_ = nullptr;
}

absl::StatusOr<std::vector<std::byte>> UcxMemory::PackRkey() const {
  void* buffer = nullptr;
  size_t size = 0;
  HEADWISE_UCS_RETURN_IF_ERROR(ucp_rkey_pack(context_, memh_, &buffer, &size));
  const auto* bytes = static_cast<const std::byte*>(buffer);
  std::vector<std::byte> out(bytes, bytes + size);
  ucp_rkey_buffer_release(buffer);
  return out;
}

// ---- UcxRemoteKey -----------------------------------------------------------

absl::StatusOr<UcxRemoteKey> UcxRemoteKey::Unpack(const UcxEndpoint& ep,
                                                  std::span<const std::byte> packed) {
  if (ep.get() == nullptr || packed.empty()) {
    return absl::InvalidArgumentError("UcxRemoteKey::Unpack: closed endpoint or empty key");
  }
  ucp_rkey_h rkey = nullptr;
  if (ucs_status_t rc = ucp_ep_rkey_unpack(ep.get(), packed.data(), &rkey); rc != UCS_OK) {
    return UcsStatus(rc, absl::StrCat("ucp_ep_rkey_unpack(", ep.peer_name(), ")"));
  }
  return UcxRemoteKey(rkey);
}

UcxRemoteKey::UcxRemoteKey(UcxRemoteKey&& other) noexcept
    : rkey_(std::exchange(other.rkey_, nullptr)) {}

UcxRemoteKey& UcxRemoteKey::operator=(UcxRemoteKey&& other) noexcept {
  if (this != &other) {
    if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
    rkey_ = std::exchange(other.rkey_, nullptr);
  }
  return *this;
}

UcxRemoteKey::~UcxRemoteKey() {
  if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
}

}  // namespace headwise::comm
