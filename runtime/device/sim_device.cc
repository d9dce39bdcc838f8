// The sim device: a CPU device with its own byte-budgeted arena (first-fit free
// list with coalescing) and one copy-engine thread that memcpy's posted batches
// host <-> arena in FIFO order, optionally capped at a link rate. It exists to
// test offload logic without a GPU, so it checks what a GPU would punish:
// copies outside live allocations, compute on host KV or under a pending copy.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "runtime/device/device.h"
#include "spdlog/spdlog.h"

namespace headwise::device {
namespace {

using Clock = std::chrono::steady_clock;

size_t RoundUp(size_t bytes) {
  return (bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
}

// "12345 bytes (12.1 KiB)".
std::string Bytes(int64_t n) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (n < 1024) return absl::StrCat(n, " bytes");
  double v = static_cast<double>(n);
  int unit = -1;
  while (v >= 1024.0 && unit < 3) v /= 1024.0, ++unit;
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f %s", v, kUnits[unit]);
  return absl::StrCat(n, " bytes (", text, ")");
}

// Half-open address range [begin, end).
struct Range {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

// Whether r overlaps any of `sorted`: disjoint ranges ordered by begin.
bool Touches(const std::vector<Range>& sorted, Range r) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), r.end,
                             [](const Range& x, uintptr_t end) { return x.begin < end; });
  return it != sorted.begin() && std::prev(it)->end > r.begin;
}

class SimDevice final : public Device {
 public:
  SimDevice(const SimDeviceOptions& options, const kernels::ParallelFor* parallel, void* arena,
            size_t arena_size)
      : options_(options),
        parallel_(parallel != nullptr ? parallel : &serial_),
        arena_(arena),
        arena_begin_(reinterpret_cast<uintptr_t>(arena)),
        arena_end_(arena_begin_ + arena_size) {
    free_.emplace(0, arena_size);
    engine_ = std::thread([this] { EngineLoop(); });
  }

  ~SimDevice() override {
    {
      std::lock_guard lock(copy_mu_);
      stop_ = true;  // batches not yet started are dropped; their waiters get Cancelled
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    engine_.join();
    {
      std::lock_guard lock(alloc_mu_);
      if (!live_.empty()) {
        spdlog::error("sim device destroyed with {} live buffers ({} bytes); they must not be used",
                      live_.size(), used_);
      }
    }
    std::free(arena_);
  }

  std::string_view name() const override { return "sim"; }
  const kernels::ParallelFor* host_parallel() const override { return parallel_; }

  DeviceCapabilities capabilities() const override {
    return {.zero_copy_host = false, .async_copy = true};
  }

  DeviceMemoryStats memory_stats() const override {
    std::lock_guard lock(alloc_mu_);
    return {.budget_bytes = options_.memory_bytes, .used_bytes = used_, .peak_bytes = peak_};
  }

  absl::StatusOr<CopyTicket> PostCopy(CopyDirection direction,
                                      std::vector<CopyItem> items) override;
  bool Poll(CopyTicket ticket) override {
    std::lock_guard lock(copy_mu_);
    return ticket != 0 && ticket <= last_completed_;
  }
  absl::Status Wait(CopyTicket ticket) override;
  CopyStats copy_stats() const override {
    std::lock_guard lock(copy_mu_);
    return stats_;
  }
  absl::Status PartialAttention(const kernels::PartialAttentionArgs& args) override;

 protected:
  absl::StatusOr<void*> AllocateBytes(size_t bytes) override;
  void FreeBytes(void* data, size_t bytes) override;

 private:
  struct Live {
    size_t bytes = 0;    // as asked; copies must stay inside these
    size_t rounded = 0;  // as accounted
  };
  struct Batch {
    CopyTicket ticket = 0;
    CopyDirection direction = CopyDirection::kToDevice;
    std::vector<CopyItem> items;
    int64_t bytes = 0;
    std::vector<Range> arena_ranges;  // device side of the items, merged, sorted
  };

  bool InArena(Range r) const { return r.begin >= arena_begin_ && r.end <= arena_end_; }
  bool OutsideArena(Range r) const { return r.end <= arena_begin_ || r.begin >= arena_end_; }
  bool InLiveAllocation(Range r) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(alloc_mu_) {
    if (!InArena(r)) return false;
    auto it = live_.upper_bound(r.begin - arena_begin_);
    if (it == live_.begin()) return false;
    --it;
    return r.end - arena_begin_ <= it->first + it->second.bytes;
  }
  void EngineLoop();

  const SimDeviceOptions options_;
  kernels::SerialFor serial_;
  const kernels::ParallelFor* parallel_;
  void* const arena_;
  const uintptr_t arena_begin_;
  const uintptr_t arena_end_;

  mutable std::mutex alloc_mu_;  // taken before copy_mu_ when both are held
  std::map<size_t, size_t> free_ ABSL_GUARDED_BY(alloc_mu_);  // offset -> bytes, coalesced
  std::map<size_t, Live> live_ ABSL_GUARDED_BY(alloc_mu_);    // offset -> allocation
  int64_t used_ ABSL_GUARDED_BY(alloc_mu_) = 0;
  int64_t peak_ ABSL_GUARDED_BY(alloc_mu_) = 0;

  mutable std::mutex copy_mu_;
  std::condition_variable work_cv_;  // new batch, or stop
  std::condition_variable done_cv_;  // a batch completed, or stop
  // Posted, not yet completed; the front one is in flight.
  std::deque<std::unique_ptr<Batch>> pending_ ABSL_GUARDED_BY(copy_mu_);
  CopyTicket last_issued_ ABSL_GUARDED_BY(copy_mu_) = 0;
  CopyTicket last_completed_ ABSL_GUARDED_BY(copy_mu_) = 0;  // FIFO: all <= are done
  CopyStats stats_ ABSL_GUARDED_BY(copy_mu_);
  bool stop_ ABSL_GUARDED_BY(copy_mu_) = false;

  std::thread engine_;  // last: starts after everything above exists
};

absl::StatusOr<void*> SimDevice::AllocateBytes(size_t bytes) {
  const size_t rounded = RoundUp(bytes);
  std::lock_guard lock(alloc_mu_);
  const int64_t budget = options_.memory_bytes;
  if (static_cast<int64_t>(rounded) > budget - used_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sim device memory: asked for ", Bytes(static_cast<int64_t>(bytes)), ", ",
                     Bytes(used_), " of ", Bytes(budget), " in use"));
  }
  size_t largest = 0;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const auto [offset, size] = *it;
    if (size < rounded) {
      largest = std::max(largest, size);
      continue;
    }
    free_.erase(it);
    if (size > rounded) free_.emplace(offset + rounded, size - rounded);
    live_.emplace(offset, Live{bytes, rounded});
    used_ += static_cast<int64_t>(rounded);
    peak_ = std::max(peak_, used_);
    return reinterpret_cast<void*>(arena_begin_ + offset);
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "sim device memory: asked for ", Bytes(static_cast<int64_t>(bytes)), ", ", Bytes(used_),
      " of ", Bytes(budget), " in use, but fragmented: the largest free range is ",
      Bytes(static_cast<int64_t>(largest))));
}

void SimDevice::FreeBytes(void* data, size_t /*bytes*/) {
  const size_t offset = reinterpret_cast<uintptr_t>(data) - arena_begin_;
  Range range;
  {
    // Unlisting first makes any later PostCopy naming this buffer fail.
    std::lock_guard lock(alloc_mu_);
    auto it = live_.find(offset);
    if (it == live_.end()) {
      spdlog::error("sim device: freeing {} which is not a live allocation", data);
      return;
    }
    range = {reinterpret_cast<uintptr_t>(data),
             reinterpret_cast<uintptr_t>(data) + it->second.rounded};
    used_ -= static_cast<int64_t>(it->second.rounded);
    live_.erase(it);
  }
  {
    // Never hand the bytes out again while a posted copy still touches them.
    std::unique_lock lock(copy_mu_);
    CopyTicket last_touching = 0;
    for (const auto& batch : pending_) {
      if (Touches(batch->arena_ranges, range)) last_touching = batch->ticket;
    }
    done_cv_.wait(lock, [&] { return stop_ || last_completed_ >= last_touching; });
  }
  std::lock_guard lock(alloc_mu_);
  size_t begin = offset;
  size_t size = range.end - range.begin;
  auto next = free_.lower_bound(offset);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == begin) {
      begin = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && offset + (range.end - range.begin) == next->first) {
    size += next->second;
    free_.erase(next);
  }
  free_.emplace(begin, size);
}

absl::StatusOr<CopyTicket> SimDevice::PostCopy(CopyDirection direction,
                                               std::vector<CopyItem> items) {
  const bool to_device = direction == CopyDirection::kToDevice;
  const std::string what = to_device ? "sim device copy to device" : "sim device copy to host";
  auto batch = std::make_unique<Batch>();
  batch->direction = direction;
  std::lock_guard alloc_lock(alloc_mu_);  // held until queued: buffers stay live
  for (size_t i = 0; i < items.size(); ++i) {
    const CopyItem& item = items[i];
    if (item.bytes == 0) continue;
    const std::string where = absl::StrCat(what, ": item ", i, " (", item.bytes, " bytes)");
    if (item.dst == nullptr || item.src == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has a null pointer"));
    }
    const auto dst = reinterpret_cast<uintptr_t>(item.dst);
    const auto src = reinterpret_cast<uintptr_t>(item.src);
    if (dst > UINTPTR_MAX - item.bytes || src > UINTPTR_MAX - item.bytes) {
      return absl::InvalidArgumentError(absl::StrCat(where, " wraps the address space"));
    }
    const Range device_side =
        to_device ? Range{dst, dst + item.bytes} : Range{src, src + item.bytes};
    const Range host_side = to_device ? Range{src, src + item.bytes} : Range{dst, dst + item.bytes};
    if (!InLiveAllocation(device_side)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": its ", to_device ? "destination" : "source",
                       " is not inside one live sim device allocation"));
    }
    if (!OutsideArena(host_side)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": its ",
                                                     to_device ? "source" : "destination",
                                                     " is in sim device memory, not host memory"));
    }
    batch->arena_ranges.push_back(device_side);
    batch->bytes += static_cast<int64_t>(item.bytes);
  }
  std::vector<Range>& ranges = batch->arena_ranges;
  std::sort(ranges.begin(), ranges.end(), [](Range a, Range b) { return a.begin < b.begin; });
  size_t merged = 0;
  for (const Range& r : ranges) {
    if (merged > 0 && r.begin <= ranges[merged - 1].end) {
      ranges[merged - 1].end = std::max(ranges[merged - 1].end, r.end);
    } else {
      ranges[merged++] = r;
    }
  }
  ranges.resize(merged);
  batch->items = std::move(items);

  std::lock_guard copy_lock(copy_mu_);
  if (stop_) return absl::CancelledError(absl::StrCat(what, ": the device is shutting down"));
  batch->ticket = ++last_issued_;
  const CopyTicket ticket = batch->ticket;
  pending_.push_back(std::move(batch));
  work_cv_.notify_one();
  return ticket;
}

absl::Status SimDevice::Wait(CopyTicket ticket) {
  std::unique_lock lock(copy_mu_);
  if (ticket == 0 || ticket > last_issued_) {
    return absl::InvalidArgumentError(
        absl::StrCat("sim device: wait on unknown copy ticket ", ticket));
  }
  done_cv_.wait(lock, [&] { return stop_ || last_completed_ >= ticket; });
  if (last_completed_ >= ticket) return absl::OkStatus();
  return absl::CancelledError(
      absl::StrCat("sim device destroyed with copy ticket ", ticket, " pending"));
}

void SimDevice::EngineLoop() {
  const double bytes_per_second = options_.link_gbps * 1e9;
  std::unique_lock lock(copy_mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    // Only this thread pops, so the front batch stays put while unlocked.
    Batch& batch = *pending_.front();
    lock.unlock();
    const Clock::time_point start = Clock::now();
    for (const CopyItem& item : batch.items) {
      if (item.bytes > 0) std::memcpy(item.dst, item.src, item.bytes);
    }
    lock.lock();
    if (bytes_per_second > 0) {
      const auto deadline =
          start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(batch.bytes / bytes_per_second));
      work_cv_.wait_until(lock, deadline, [&] { return stop_; });
    }
    // The bytes have moved even when a stop cut the link-cap wait short.
    stats_.busy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    (batch.direction == CopyDirection::kToDevice ? stats_.bytes_to_device : stats_.bytes_to_host) +=
        batch.bytes;
    last_completed_ = batch.ticket;
    pending_.pop_front();
    done_cv_.notify_all();
  }
}

absl::Status SimDevice::PartialAttention(const kernels::PartialAttentionArgs& args) {
  if (kernels::PartialAttentionArgsError(args) == nullptr && args.n_rows > 0) {
    const size_t row_bytes =
        static_cast<size_t>(args.head_dim) * kernels::KvDtypeSize(args.kv_dtype);
    const int64_t n = static_cast<int64_t>(args.n_kv_heads) * args.n_blocks;
    std::lock_guard lock(copy_mu_);
    for (int64_t i = 0; i < n; ++i) {
      const kernels::KvBlockView& block = args.blocks[i];
      if (block.n_tokens == 0) continue;
      const size_t bytes = row_bytes * static_cast<size_t>(block.n_tokens);
      for (const void* p : {block.k, block.v}) {
        const auto begin = reinterpret_cast<uintptr_t>(p);
        const Range r{begin, begin + bytes};
        auto block_name = [&] {
          return absl::StrCat("block ", i / args.n_blocks, "/", i % args.n_blocks);
        };
        if (begin > UINTPTR_MAX - bytes || !InArena(r)) {
          return absl::InvalidArgumentError(
              absl::StrCat("sim device computes only on its own memory: ", block_name(),
                           " points outside the arena"));
        }
        for (const auto& batch : pending_) {
          if (batch->direction == CopyDirection::kToDevice && Touches(batch->arena_ranges, r)) {
            return absl::InvalidArgumentError(absl::StrCat(
                "sim device: ", block_name(), " is being written by pending copy ticket ",
                batch->ticket, "; Wait for it before computing"));
          }
        }
      }
    }
  }
  return RunPartialAttention(args, *parallel_);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Device>> MakeSimDevice(const SimDeviceOptions& options,
                                                      const kernels::ParallelFor* parallel) {
  if (options.memory_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sim device: memory budget must be > 0 bytes, got ", options.memory_bytes));
  }
  if (!std::isfinite(options.link_gbps) || options.link_gbps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sim device: link rate must be >= 0 GB/s (0: uncapped), got ", options.link_gbps));
  }
  const size_t arena_size = RoundUp(static_cast<size_t>(options.memory_bytes));
  void* arena = std::aligned_alloc(kDeviceAlignment, arena_size);
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sim device: could not reserve an arena of ", Bytes(options.memory_bytes)));
  }
  return std::make_unique<SimDevice>(options, parallel, arena, arena_size);
}

}  // namespace headwise::device
