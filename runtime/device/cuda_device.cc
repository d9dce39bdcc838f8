// The cuda device (device.h): cudaMalloc'd HBM with exact budget accounting,
// PostCopy batches as cudaMemcpyAsync on a dedicated copy stream with a pair
// of events per batch (the end event is the ticket; start/end time the busy
// seconds), and the split-KV attention kernel on a compute stream. Every CUDA
// error becomes a Status naming the call; nothing aborts.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.cuh"
#include "runtime/device/device.h"
#include "spdlog/spdlog.h"

namespace headwise::device {
namespace {

absl::Status CudaError(const char* call, cudaError_t err) {
  return absl::InternalError(
      absl::StrCat(call, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

#define HEADWISE_CUDA_RETURN(call)                          \
  do {                                                      \
    cudaError_t err_ = (call);                              \
    if (err_ != cudaSuccess) return CudaError(#call, err_); \
  } while (0)

size_t RoundUp(size_t bytes) {
  return (bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
}

// Device scratch that only grows (q, o, lse, views, workspace).
struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  absl::Status Reserve(size_t want) {
    if (want <= bytes) return absl::OkStatus();
    if (data != nullptr) cudaFree(data);
    data = nullptr;
    bytes = 0;
    HEADWISE_CUDA_RETURN(cudaMalloc(&data, want));
    bytes = want;
    return absl::OkStatus();
  }
  ~Scratch() {
    if (data != nullptr) cudaFree(data);
  }
};

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(const CudaDeviceOptions& options) : options_(options) {}
  ~CudaDevice() override {
    if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
    for (auto& [ticket, batch] : batches_) {
      cudaEventDestroy(batch.start);
      cudaEventDestroy(batch.end);
    }
    if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
    if (compute_stream_ != nullptr) cudaStreamDestroy(compute_stream_);
    if (used_ != 0) spdlog::error("cuda device destroyed with {} bytes still allocated", used_);
  }

  absl::Status Init() {
    int count = 0;
    if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
      return absl::UnavailableError(
          absl::StrCat("no usable CUDA GPU: ", CudaError("cudaGetDeviceCount", err).message()));
    }
    if (options_.ordinal < 0 || options_.ordinal >= count) {
      return absl::UnavailableError(
          absl::StrCat("cuda device ", options_.ordinal, " requested, ", count, " visible"));
    }
    HEADWISE_CUDA_RETURN(cudaSetDevice(options_.ordinal));
    HEADWISE_CUDA_RETURN(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    HEADWISE_CUDA_RETURN(cudaStreamCreateWithFlags(&compute_stream_, cudaStreamNonBlocking));
    return absl::OkStatus();
  }

  std::string_view name() const override { return "cuda"; }
  DeviceCapabilities capabilities() const override {
    return {.zero_copy_host = false, .async_copy = true, .host_writes_device_memory = false};
  }

  void* AllocateHost(size_t bytes) override {
    void* data = nullptr;
    if (cudaError_t err = cudaHostAlloc(&data, bytes, cudaHostAllocDefault); err != cudaSuccess) {
      spdlog::error("cudaHostAlloc({} bytes): {}", bytes, cudaGetErrorString(err));
      return nullptr;
    }
    return data;
  }

  void FreeHost(void* data) override {
    if (cudaError_t err = cudaFreeHost(data); err != cudaSuccess) {
      spdlog::error("cudaFreeHost: {}", cudaGetErrorString(err));
    }
  }

  DeviceMemoryStats memory_stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return {options_.memory_bytes, used_, peak_};
  }

  absl::StatusOr<CopyTicket> PostCopy(CopyDirection direction,
                                      std::vector<CopyItem> items) override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < items.size(); ++i) {
      const CopyItem& item = items[i];
      const void* device_side = direction == CopyDirection::kToDevice ? item.dst : item.src;
      const void* host_side = direction == CopyDirection::kToDevice ? item.src : item.dst;
      if (item.dst == nullptr || item.src == nullptr ||
          !InsideAllocation(device_side, item.bytes) || InsideAllocation(host_side, 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("cuda device: copy item ", i, " of ", items.size(),
                         " does not go between host memory and one live device allocation"));
      }
    }
    Batch batch;
    HEADWISE_CUDA_RETURN(cudaEventCreate(&batch.start));
    HEADWISE_CUDA_RETURN(cudaEventCreate(&batch.end));
    HEADWISE_CUDA_RETURN(cudaEventRecord(batch.start, copy_stream_));
    const cudaMemcpyKind kind =
        direction == CopyDirection::kToDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    for (const CopyItem& item : items) {
      batch.bytes += static_cast<int64_t>(item.bytes);
      if (item.bytes == 0) continue;
      HEADWISE_CUDA_RETURN(cudaMemcpyAsync(item.dst, item.src, item.bytes, kind, copy_stream_));
    }
    HEADWISE_CUDA_RETURN(cudaEventRecord(batch.end, copy_stream_));
    batch.to_device = direction == CopyDirection::kToDevice;
    const CopyTicket ticket = ++last_ticket_;
    batches_.emplace(ticket, batch);
    return ticket;
  }

  bool Poll(CopyTicket ticket) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ticket == 0 || ticket > last_ticket_) return false;
    auto it = batches_.find(ticket);
    if (it == batches_.end()) return true;  // completed and retired
    if (cudaEventQuery(it->second.end) != cudaSuccess) return false;
    Retire(it);
    return true;
  }

  absl::Status Wait(CopyTicket ticket) override {
    cudaEvent_t end;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (ticket == 0 || ticket > last_ticket_) {
        return absl::InvalidArgumentError(absl::StrCat("cuda device: no copy ticket ", ticket));
      }
      auto it = batches_.find(ticket);
      if (it == batches_.end()) return absl::OkStatus();
      end = it->second.end;
    }
    HEADWISE_CUDA_RETURN(cudaEventSynchronize(end));
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = batches_.find(ticket); it != batches_.end()) Retire(it);
    return absl::OkStatus();
  }

  CopyStats copy_stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  absl::Status PartialAttention(const kernels::PartialAttentionArgs& args) override {
    if (const char* error = kernels::cuda::PartialAttentionDeviceArgsError(args)) {
      return absl::InvalidArgumentError(absl::StrCat("partial attention: ", error));
    }
    if (args.n_rows == 0) return absl::OkStatus();
    const int64_t heads = int64_t(args.n_kv_heads) * args.group_size;
    const int64_t rows = args.n_rows, hd = args.head_dim;
    const int64_t q_stride = args.q_row_stride != 0 ? args.q_row_stride : heads * hd;
    const int64_t o_stride = args.o_row_stride != 0 ? args.o_row_stride : heads * hd;
    const int64_t lse_stride = args.lse_row_stride != 0 ? args.lse_row_stride : heads;
    const size_t n_views = size_t(args.n_kv_heads) * args.n_blocks;
    for (size_t i = 0; i < n_views; ++i) {
      const kernels::KvBlockView& view = args.blocks[i];
      if (view.n_tokens > 0 && !InsideAllocation(view.k, 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cuda device computes only on its own memory: block view ", i, " is not in HBM"));
      }
    }
    // Dense device copies of q, positions, outputs and the view array.
    kernels::PartialAttentionArgs d = args;
    const size_t q_bytes = rows * heads * hd * sizeof(float);
    const size_t lse_bytes = rows * heads * sizeof(float);
    const size_t pos_bytes = args.causal ? rows * sizeof(int32_t) : 0;
    const size_t views_bytes = std::max<size_t>(n_views, 1) * sizeof(kernels::KvBlockView);
    d.q_row_stride = d.o_row_stride = heads * hd;
    d.lse_row_stride = heads;
    d.parallel = nullptr;
    size_t workspace = 0;
    std::lock_guard<std::mutex> lock(attention_mutex_);
    HEADWISE_CUDA_RETURN(kernels::cuda::PartialAttentionWorkspaceBytes(d, &workspace));
    const size_t offsets[] = {
        0,
        RoundUp(q_bytes),
        RoundUp(q_bytes) * 2,
        RoundUp(q_bytes) * 2 + RoundUp(lse_bytes),
        RoundUp(q_bytes) * 2 + RoundUp(lse_bytes) + RoundUp(pos_bytes),
        RoundUp(q_bytes) * 2 + RoundUp(lse_bytes) + RoundUp(pos_bytes) + RoundUp(views_bytes)};
    if (absl::Status s = scratch_.Reserve(offsets[5] + workspace); !s.ok()) return s;
    char* base = static_cast<char*>(scratch_.data);
    float* q = reinterpret_cast<float*>(base + offsets[0]);
    float* o = reinterpret_cast<float*>(base + offsets[1]);
    float* lse = reinterpret_cast<float*>(base + offsets[2]);
    int32_t* pos = reinterpret_cast<int32_t*>(base + offsets[3]);
    auto* views = reinterpret_cast<kernels::KvBlockView*>(base + offsets[4]);
    cudaStream_t s = compute_stream_;
    HEADWISE_CUDA_RETURN(cudaMemcpy2DAsync(q, heads * hd * sizeof(float), args.q,
                                           q_stride * sizeof(float), heads * hd * sizeof(float),
                                           rows, cudaMemcpyHostToDevice, s));
    if (pos_bytes > 0) {
      HEADWISE_CUDA_RETURN(cudaMemcpyAsync(pos, args.q_pos, pos_bytes, cudaMemcpyHostToDevice, s));
    }
    if (n_views > 0) {
      HEADWISE_CUDA_RETURN(
          cudaMemcpyAsync(views, args.blocks, n_views * sizeof(*views), cudaMemcpyHostToDevice, s));
    }
    d.q = q;
    d.q_pos = pos_bytes > 0 ? pos : nullptr;
    d.blocks = views;
    d.o = o;
    d.lse = lse;
    HEADWISE_CUDA_RETURN(kernels::cuda::PartialAttention(d, base + offsets[5], workspace, s));
    HEADWISE_CUDA_RETURN(cudaMemcpy2DAsync(args.o, o_stride * sizeof(float), o,
                                           heads * hd * sizeof(float), heads * hd * sizeof(float),
                                           rows, cudaMemcpyDeviceToHost, s));
    HEADWISE_CUDA_RETURN(cudaMemcpy2DAsync(args.lse, lse_stride * sizeof(float), lse,
                                           heads * sizeof(float), heads * sizeof(float), rows,
                                           cudaMemcpyDeviceToHost, s));
    HEADWISE_CUDA_RETURN(cudaStreamSynchronize(s));
    return absl::OkStatus();
  }

 protected:
  absl::StatusOr<void*> AllocateBytes(size_t bytes) override {
    const size_t rounded = RoundUp(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (used_ + static_cast<int64_t>(rounded) > options_.memory_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat("cuda device memory: asked for ", bytes,
                                                         " bytes, ", used_, " of ",
                                                         options_.memory_bytes, " bytes in use"));
      }
    }
    void* data = nullptr;
    HEADWISE_CUDA_RETURN(cudaMalloc(&data, rounded));
    std::lock_guard<std::mutex> lock(mutex_);
    used_ += static_cast<int64_t>(rounded);
    peak_ = std::max(peak_, used_);
    allocations_.emplace(reinterpret_cast<uintptr_t>(data), rounded);
    return data;
  }

  void FreeBytes(void* data, size_t bytes) override {
    // A copy touching the buffer may still be in flight on the copy stream.
    cudaStreamSynchronize(copy_stream_);
    if (cudaError_t err = cudaFree(data); err != cudaSuccess) {
      spdlog::error("cudaFree: {}", cudaGetErrorString(err));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    allocations_.erase(reinterpret_cast<uintptr_t>(data));
    used_ -= static_cast<int64_t>(RoundUp(bytes));
  }

 private:
  struct Batch {
    cudaEvent_t start = nullptr;
    cudaEvent_t end = nullptr;
    int64_t bytes = 0;
    bool to_device = true;
  };

  void Retire(std::map<CopyTicket, Batch>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, it->second.start, it->second.end) == cudaSuccess) {
      stats_.busy_seconds += ms / 1e3;
    }
    (it->second.to_device ? stats_.bytes_to_device : stats_.bytes_to_host) += it->second.bytes;
    cudaEventDestroy(it->second.start);
    cudaEventDestroy(it->second.end);
    batches_.erase(it);
  }

  bool InsideAllocation(const void* p, size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(p);
    auto it = allocations_.upper_bound(at);
    if (it == allocations_.begin()) return false;
    --it;
    return at >= it->first && at + bytes <= it->first + it->second;
  }

  CudaDeviceOptions options_;
  cudaStream_t copy_stream_ = nullptr;
  cudaStream_t compute_stream_ = nullptr;
  mutable std::mutex mutex_;
  std::map<uintptr_t, size_t> allocations_ ABSL_GUARDED_BY(mutex_);
  std::map<CopyTicket, Batch> batches_ ABSL_GUARDED_BY(mutex_);
  CopyTicket last_ticket_ ABSL_GUARDED_BY(mutex_) = 0;
  CopyStats stats_ ABSL_GUARDED_BY(mutex_);
  int64_t used_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t peak_ ABSL_GUARDED_BY(mutex_) = 0;
  std::mutex attention_mutex_;  // one attention call at a time uses scratch_
  Scratch scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Device>> MakeCudaDevice(const CudaDeviceOptions& options) {
  if (options.memory_bytes <= 0) {
    return absl::InvalidArgumentError("cuda device needs a memory budget (--device-mem) > 0");
  }
  auto device = std::make_unique<CudaDevice>(options);
  if (absl::Status s = device->Init(); !s.ok()) return s;
  return device;
}

}  // namespace headwise::device
