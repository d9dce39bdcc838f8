// Where a rank's compute runs, behind one interface (DESIGN.md "device"):
// `cpu` computes on host memory in place (zero copy); `sim` is a CPU device
// with its own byte-budgeted arena and a copy-engine thread that moves bytes
// host <-> arena asynchronously, optionally capped at a link rate, so
// transfer/compute overlap is real and observable without a GPU; `cuda` (a
// later milestone) fits the same shape. Transfers follow an explicit async
// lifecycle: Post a batch -> Poll/Wait its ticket; nothing is implicit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention.h"

namespace headwise::device {

struct DeviceCapabilities {
  // Compute may read host memory directly, so host-tier KV needs no staging.
  bool zero_copy_host = false;
  // Transfers run concurrently with compute (a copy engine).
  bool async_copy = false;
  // The CPU may write device memory through its pointers (cpu, sim). When
  // false (cuda), data reaches device memory only through PostCopy.
  bool host_writes_device_memory = true;
};

// One contiguous copy of `bytes` from `src` to `dst`. For ToDevice, dst is in
// this device's memory and src in host memory; for ToHost the reverse.
struct CopyItem {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

enum class CopyDirection { kToDevice, kToHost };

// Identifies a posted batch of one device; 0 is never a valid ticket. Tickets
// increase in posting order.
using CopyTicket = uint64_t;

struct DeviceMemoryStats {
  int64_t budget_bytes = 0;  // 0 for devices without their own memory (cpu)
  // Live allocations, each rounded up to kDeviceAlignment bytes.
  int64_t used_bytes = 0;
  int64_t peak_bytes = 0;
};

// Counts completed batches only.
struct CopyStats {
  int64_t bytes_to_device = 0;
  int64_t bytes_to_host = 0;
  // Time the copy engine spent moving bytes: the sum over batches of the wall
  // time from a batch's start to its completion (link-cap waits included).
  double busy_seconds = 0;
};

// Alignment of every DeviceBuffer's data.
inline constexpr size_t kDeviceAlignment = 64;

// Device memory owned by a Device; returned to it on destruction. Move-only.
// The Device must outlive every buffer it handed out.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  friend class Device;
  DeviceBuffer(class Device* owner, void* data, size_t size)
      : owner_(owner), data_(data), size_(size) {}
  void Reset();

  class Device* owner_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

class Device {
 public:
  virtual ~Device() = default;

  virtual std::string_view name() const = 0;
  virtual DeviceCapabilities capabilities() const = 0;
  // The host threads the device computes with (cpu, sim), for host-side work
  // next to its kernels (a policy's selection); null: none to share.
  virtual const kernels::ParallelFor* host_parallel() const { return nullptr; }

  // Device memory of `bytes` (> 0), aligned to kDeviceAlignment, contents
  // unspecified. ResourceExhausted, with the budget, the bytes in use and the
  // bytes asked for, when it does not fit; InvalidArgument for 0 bytes.
  // Thread-safe. Freeing (destroying the buffer) waits for pending copies
  // that touch it, so a buffer is never reused under an in-flight copy.
  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  virtual DeviceMemoryStats memory_stats() const = 0;

  // Host memory for KV blocks, as this device copies it fastest: page-locked
  // on cuda (so PostCopy is truly asynchronous), plain memory elsewhere;
  // aligned to kDeviceAlignment. nullptr when out of memory. Give it back with
  // FreeHost once no copy touches it. Thread-safe.
  virtual void* AllocateHost(size_t bytes);
  virtual void FreeHost(void* data);

  // Starts copying every item of `items` in `direction`; returns at once. The
  // memory named by the items must stay valid and untouched until Wait (or a
  // Poll that returned true) for the ticket. Items of one batch complete in
  // order; batches complete in the order they were posted. Devices without a
  // copy engine copy synchronously inside Post. An empty batch is fine.
  // InvalidArgument, naming the item, for a null pointer, overlapping src and
  // dst, or (devices with their own memory) a device-side range that is not
  // inside one live allocation or a host-side range inside device memory;
  // nothing of a rejected batch is copied. Thread-safe.
  virtual absl::StatusOr<CopyTicket> PostCopy(CopyDirection direction,
                                              std::vector<CopyItem> items) = 0;
  // True once the batch has completed (its error, if any, is returned by Wait).
  // False for a ticket this device never issued.
  virtual bool Poll(CopyTicket ticket) = 0;
  // Blocks until the batch has completed; its status. May be called again for
  // a completed ticket. InvalidArgument for a ticket this device never issued;
  // Cancelled if the device is being destroyed with the batch still pending.
  virtual absl::Status Wait(CopyTicket ticket) = 0;
  virtual CopyStats copy_stats() const = 0;

  // Partial attention (kernels/attention.h) whose q, blocks and outputs are in
  // memory this device computes on (its own buffers, or host memory when
  // zero_copy_host). Synchronous. args.parallel == nullptr means the device's
  // own ParallelFor. InvalidArgument with kernels::PartialAttentionArgsError's
  // message for inconsistent args, or (devices with their own memory) for KV
  // outside device memory or under a pending ToDevice copy (Wait first).
  virtual absl::Status PartialAttention(const kernels::PartialAttentionArgs& args) = 0;

 protected:
  // Allocation hooks of Allocate / ~DeviceBuffer.
  virtual absl::StatusOr<void*> AllocateBytes(size_t bytes) = 0;
  virtual void FreeBytes(void* data, size_t bytes) = 0;

  // Validates args and runs kernels::PartialAttention on `parallel` when
  // args.parallel is null. Shared by the CPU-computing devices.
  static absl::Status RunPartialAttention(const kernels::PartialAttentionArgs& args,
                                          const kernels::ParallelFor& parallel);

 private:
  friend class DeviceBuffer;
};

struct SimDeviceOptions {
  int64_t memory_bytes = 0;  // arena budget; > 0
  // Link cap in gigaBYTES per second (GB/s, 1e9 bytes/s, as PCIe figures and
  // the rest of headwise report), shared by both directions (one copy engine):
  // a batch of n bytes takes at least n / (link_gbps * 1e9) seconds. 0: uncapped
  // (memcpy speed). `--sim-link-gbps` means the same unit.
  double link_gbps = 0;
};

struct CudaDeviceOptions {
  int64_t memory_bytes = 0;  // KV budget in HBM (blocks + staging); > 0
  int ordinal = 0;           // CUDA device number
};

// The cuda device: KV blocks and staging in HBM within the budget, a copy
// stream for PostCopy (events as tickets) and a compute stream for the split-KV
// attention kernel. PartialAttention takes q/q_pos/o/lse and the block-view
// array in host memory (activations live on the host until the GPU forward
// lands) and moves them with 2-D copies around the kernel. Unavailable when
// the build has no CUDA or no GPU is visible; errors name the CUDA call.
absl::StatusOr<std::unique_ptr<Device>> MakeCudaDevice(const CudaDeviceOptions& options);

// The cpu device: host memory, zero copy, synchronous "copies" (memcpy).
// `parallel` (may be null: serial) must outlive the device.
std::unique_ptr<Device> MakeCpuDevice(const kernels::ParallelFor* parallel);
// The sim device: an arena of options.memory_bytes (first-fit, coalescing),
// one copy-engine thread (batches FIFO). InvalidArgument for a non-positive
// budget or a negative or non-finite rate; ResourceExhausted if the arena
// cannot be reserved. `parallel` (may be null: serial) must outlive the device.
absl::StatusOr<std::unique_ptr<Device>> MakeSimDevice(const SimDeviceOptions& options,
                                                      const kernels::ParallelFor* parallel);

}  // namespace headwise::device
