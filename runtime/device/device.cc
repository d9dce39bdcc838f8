// What every device shares: DeviceBuffer's ownership (a buffer returns its
// bytes to the device that allocated it), Device::Allocate's argument checks,
// and the checked call into the CPU partial-attention kernel that the cpu and
// sim devices both compute with.
#include "runtime/device/device.h"

#include <cstdlib>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace headwise::device {

DeviceBuffer::~DeviceBuffer() { Reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (owner_ != nullptr && data_ != nullptr) owner_->FreeBytes(data_, size_);
  owner_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<DeviceBuffer> Device::Allocate(size_t bytes) {
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(name()), " device: cannot allocate 0 bytes"));
  }
  // Keeps every size (rounded to the alignment) representable as int64_t.
  constexpr size_t kMaxBytes = static_cast<size_t>(std::numeric_limits<int64_t>::max() / 2);
  if (bytes > kMaxBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(std::string(name()),
                                                     " device memory: asked for ", bytes,
                                                     " bytes, more than any device holds"));
  }
  absl::StatusOr<void*> data = AllocateBytes(bytes);
  if (!data.ok()) return data.status();
  return DeviceBuffer(this, *data, bytes);
}

absl::Status Device::RunPartialAttention(const kernels::PartialAttentionArgs& args,
                                         const kernels::ParallelFor& parallel) {
  if (const char* error = kernels::PartialAttentionArgsError(args); error != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("partial attention: ", error));
  }
  kernels::PartialAttentionArgs run = args;
  if (run.parallel == nullptr) run.parallel = &parallel;
  if (!kernels::PartialAttention(run)) {
    return absl::InternalError("partial attention: kernel rejected arguments it had accepted");
  }
  return absl::OkStatus();
}

void* Device::AllocateHost(size_t bytes) {
  const size_t rounded = (bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
  return std::aligned_alloc(kDeviceAlignment, rounded);
}

void Device::FreeHost(void* data) { std::free(data); }

#ifndef HEADWISE_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Device>> MakeCudaDevice(const CudaDeviceOptions&) {
  return absl::UnimplementedError(
      "this headwise was built without CUDA (nvcc was not found at configure time)");
}
#endif

}  // namespace headwise::device
