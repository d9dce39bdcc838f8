// The cpu device: compute reads host memory in place (zero copy), so "device"
// memory is plain 64-byte-aligned host memory with usage tracked but no
// budget, and a copy batch is memcpy'd inside PostCopy and is complete before
// its ticket is returned.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "runtime/device/device.h"

namespace headwise::device {
namespace {

size_t RoundUp(size_t bytes) {
  return (bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
}

bool Overlap(const void* a, const void* b, size_t bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a);
  const auto y = reinterpret_cast<uintptr_t>(b);
  return x < y + bytes && y < x + bytes;
}

class CpuDevice final : public Device {
 public:
  explicit CpuDevice(const kernels::ParallelFor* parallel)
      : parallel_(parallel != nullptr ? parallel : &serial_) {}

  std::string_view name() const override { return "cpu"; }
  const kernels::ParallelFor* host_parallel() const override { return parallel_; }

  DeviceCapabilities capabilities() const override {
    return {.zero_copy_host = true, .async_copy = false};
  }

  DeviceMemoryStats memory_stats() const override {
    std::lock_guard lock(mutex_);
    return {.budget_bytes = 0, .used_bytes = used_, .peak_bytes = peak_};
  }

  absl::StatusOr<CopyTicket> PostCopy(CopyDirection direction,
                                      std::vector<CopyItem> items) override {
    int64_t total = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const CopyItem& item = items[i];
      if (item.bytes == 0) continue;
      if (item.dst == nullptr || item.src == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("cpu device copy: item ", i, " has a null pointer"));
      }
      if (Overlap(item.dst, item.src, item.bytes)) {
        return absl::InvalidArgumentError(
            absl::StrCat("cpu device copy: item ", i, " has overlapping src and dst"));
      }
      total += static_cast<int64_t>(item.bytes);
    }
    const auto start = std::chrono::steady_clock::now();
    for (const CopyItem& item : items) {
      if (item.bytes > 0) std::memcpy(item.dst, item.src, item.bytes);
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    {
      std::lock_guard lock(mutex_);
      (direction == CopyDirection::kToDevice ? stats_.bytes_to_device : stats_.bytes_to_host) +=
          total;
      stats_.busy_seconds += took.count();
    }
    return last_ticket_.fetch_add(1) + 1;
  }

  bool Poll(CopyTicket ticket) override { return ticket != 0 && ticket <= last_ticket_.load(); }

  absl::Status Wait(CopyTicket ticket) override {
    if (!Poll(ticket)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpu device: wait on unknown copy ticket ", ticket));
    }
    return absl::OkStatus();
  }

  CopyStats copy_stats() const override {
    std::lock_guard lock(mutex_);
    return stats_;
  }

  absl::Status PartialAttention(const kernels::PartialAttentionArgs& args) override {
    return RunPartialAttention(args, *parallel_);
  }

 protected:
  absl::StatusOr<void*> AllocateBytes(size_t bytes) override {
    const size_t rounded = RoundUp(bytes);
    void* data = std::aligned_alloc(kDeviceAlignment, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu device memory: could not allocate ", bytes, " bytes"));
    }
    std::lock_guard lock(mutex_);
    used_ += static_cast<int64_t>(rounded);
    if (used_ > peak_) peak_ = used_;
    return data;
  }

  void FreeBytes(void* data, size_t bytes) override {
    std::free(data);
    std::lock_guard lock(mutex_);
    used_ -= static_cast<int64_t>(RoundUp(bytes));
  }

 private:
  kernels::SerialFor serial_;
  const kernels::ParallelFor* parallel_;
  std::atomic<CopyTicket> last_ticket_{0};
  mutable std::mutex mutex_;
  int64_t used_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t peak_ ABSL_GUARDED_BY(mutex_) = 0;
  CopyStats stats_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace

std::unique_ptr<Device> MakeCpuDevice(const kernels::ParallelFor* parallel) {
  return std::make_unique<CpuDevice>(parallel);
}

}  // namespace headwise::device
