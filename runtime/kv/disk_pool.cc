// The disk tier. All block I/O funnels through
// IoRunner, which keeps up to `depth` reads/writes in flight on io_uring (or
// runs them synchronously with pread/pwrite) and resubmits short transfers,
// so writes, Stream's ping-pong window and the read probe share one path.
#include "runtime/kv/disk_pool.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace headwise::kv {
namespace {

using block_io::AlignUp;
using block_io::ErrnoError;
using block_io::Hex;
using block_io::kAlign;
using block_io::TransferFull;

constexpr int64_t kMaxOpBytes = int64_t{1} << 30;  // io_uring lengths are 32-bit
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes free to an unprivileged writer on the filesystem holding `dir`; -1 if unknown.
int64_t FreeBytes(const std::string& dir) {
  struct statvfs vfs;
  if (statvfs(dir.c_str(), &vfs) != 0) return -1;
  unsigned __int128 bytes = static_cast<unsigned __int128>(vfs.f_bavail) * vfs.f_frsize;
  return bytes > static_cast<unsigned __int128>(kInt64Max) ? kInt64Max : int64_t(bytes);
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;
AlignedBuffer AlignedAlloc(int64_t bytes) {
  return AlignedBuffer(static_cast<uint8_t*>(std::aligned_alloc(kAlign, AlignUp(bytes))));
}

struct UringOwner {
  io_uring ring{};
  bool ok = false;
  ~UringOwner() { ok ? io_uring_queue_exit(&ring) : void(); }
};

struct IoOp {
  bool write = false;
  int fd = -1;
  int64_t offset = 0;
  uint8_t* buf = nullptr;
  int64_t len = 0;
  int64_t done = 0;
  int64_t slot = -1;  // for error messages
  BlockTag tag;
};

// Runs ops in index order, up to `depth` in flight; ring == nullptr runs them
// synchronously with pread/pwrite. Ops below Allow's limit may be submitted.
// WaitFor(upto) returns once ops [0, upto) completed, or with the first error
// (naming `where(op)`) once the ops in flight finished. The destructor waits
// out ops still in flight, so it must run before their buffers are freed.
class IoRunner {
 public:
  using WhereFn = std::function<std::string(const IoOp&)>;
  IoRunner(io_uring* ring, int depth, std::vector<IoOp>& ops, WhereFn where)
      : ring_(ring), depth_(depth), ops_(ops), where_(std::move(where)), complete_(ops.size()) {}
  ~IoRunner() { Drain(); }

  void Allow(size_t limit) { allowed_ = std::max(allowed_, std::min(limit, ops_.size())); }

  absl::Status WaitFor(size_t upto) {
    // The last Pump keeps the read-ahead going while the caller works.
    for (Pump(); status_.ok() && first_incomplete_ < upto; Pump()) {
      if (in_flight_ == 0) status_ = absl::InternalError("IoRunner: waiting on unallowed ops");
      if (status_.ok()) Reap();
    }
    if (!status_.ok()) Drain();
    return status_;
  }

  void Drain() {
    while (in_flight_ > 0 && Reap()) {
    }
  }

 private:
  void Pump() {
    int queued = 0;
    while (status_.ok() && in_flight_ + queued < depth_ && (!retry_.empty() || next_ < allowed_)) {
      io_uring_sqe* sqe = ring_ != nullptr ? io_uring_get_sqe(ring_) : nullptr;
      if (ring_ != nullptr && sqe == nullptr) break;
      size_t i = next_;
      if (retry_.empty()) {
        ++next_;
      } else {
        i = retry_.front();
        retry_.pop_front();
      }
      IoOp& op = ops_[i];
      const int64_t n = std::min(op.len - op.done, kMaxOpBytes);
      if (ring_ == nullptr) {
        Complete(i, TransferFull(op.write, op.fd, op.buf + op.done, n, op.offset + op.done));
        continue;
      }
      if (op.write) {
        io_uring_prep_write(sqe, op.fd, op.buf + op.done, unsigned(n), op.offset + op.done);
      } else {
        io_uring_prep_read(sqe, op.fd, op.buf + op.done, unsigned(n), op.offset + op.done);
      }
      io_uring_sqe_set_data64(sqe, i);
      ++queued;
    }
    while (queued > 0) {  // every prepared entry must go: a later submit would orphan it
      int ret = io_uring_submit(ring_);
      if (ret == -EINTR) continue;
      if (ret <= 0) {
        status_ = ErrnoError(ret < 0 ? -ret : EIO, "io_uring_submit");
        return;
      }
      in_flight_ += ret;
      queued -= ret;
    }
  }

  // Waits for a completion and takes every one ready; false if the ring failed.
  bool Reap() {
    io_uring_cqe* cqe = nullptr;
    int ret;
    do ret = io_uring_wait_cqe(ring_, &cqe);
    while (ret == -EINTR);
    if (ret < 0) {
      if (status_.ok()) status_ = ErrnoError(-ret, "io_uring_wait_cqe");
      in_flight_ = 0;
      return false;
    }
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring_, head, cqe) {
      Complete(io_uring_cqe_get_data64(cqe), cqe->res);
      ++seen;
    }
    io_uring_cq_advance(ring_, seen);
    in_flight_ -= int(seen);
    return true;
  }

  void Complete(size_t i, int64_t res) {
    IoOp& op = ops_[i];
    if (res == -EINTR || res == -EAGAIN) return retry_.push_back(i);
    if (res <= 0 && status_.ok()) {
      const char* verb = op.write ? "write" : "read";
      status_ = res < 0 ? ErrnoError(int(-res), absl::StrCat(verb, " of ", where_(op)))
                        : absl::DataLossError(absl::StrCat("short ", verb, " (", op.done, " of ",
                                                           op.len, " bytes) of ", where_(op)));
    }
    if (res <= 0) return;
    op.done += res;
    if (op.done < op.len) return retry_.push_back(i);
    complete_[i] = 1;
    while (first_incomplete_ < complete_.size() && complete_[first_incomplete_]) {
      ++first_incomplete_;
    }
  }

  io_uring* ring_;
  int depth_;
  std::vector<IoOp>& ops_;
  WhereFn where_;
  std::vector<uint8_t> complete_;
  std::deque<size_t> retry_;
  size_t allowed_ = 0, next_ = 0, first_incomplete_ = 0;
  int in_flight_ = 0;
  absl::Status status_;
};

}  // namespace

// ---------------------------------------------------------------- DiskPool

struct DiskPool::Ring : UringOwner {};

DiskPool::DiskPool(const DiskPoolOptions& options)
    : options_(options), direct_io_(options.direct_io) {
  // Pools of one process never share a file name.
  static std::atomic<int64_t> instances{0};
  instance_ = instances.fetch_add(1);
}

DiskPool::~DiskPool() {
  ring_.reset();
  for (PoolFile& file : files_) {
    file.fd.Reset();
    if (unlink(file.path.c_str()) != 0) {
      spdlog::warn("rank {}: cannot remove disk tier file {}: {}", options_.rank, file.path,
                   std::strerror(errno));
    }
  }
}

absl::StatusOr<std::unique_ptr<DiskPool>> DiskPool::Create(const DiskPoolOptions& o) {
  if (o.dir.empty() || o.block_bytes <= 0 || o.block_bytes > kInt64Max / 4 || o.queue_depth <= 0 ||
      o.file_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d: bad disk tier options: dir '%s', block_bytes %d, queue_depth %d, file_bytes %d",
        o.rank, o.dir, o.block_bytes, o.queue_depth, o.file_bytes));
  }
  if (o.capacity_bytes < o.block_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d: disk tier capacity %d bytes in %s is below one block of %d bytes",
                        o.rank, o.capacity_bytes, o.dir, o.block_bytes));
  }
  std::unique_ptr<DiskPool> pool(new DiskPool(o));
  if (absl::Status status = pool->Init(); !status.ok()) return status;  // files removed
  return pool;
}

absl::Status DiskPool::Init() {
  const std::string& dir = options_.dir;
  stride_ = AlignUp(options_.block_bytes);
  slots_ = options_.capacity_bytes / options_.block_bytes;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), absl::StrCat("rank ", options_.rank, ": mkdir ", dir));
  const int64_t free_bytes = FreeBytes(dir);
  if (slots_ > kInt64Max / stride_ || (free_bytes >= 0 && slots_ * stride_ > free_bytes)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "rank %d: the disk tier in %s needs %d slots x %d bytes = %.0f bytes, but only %d bytes "
        "are free there",
        options_.rank, dir, slots_, stride_, double(slots_) * stride_, free_bytes));
  }
  slots_per_file_ = std::max<int64_t>(1, options_.file_bytes / stride_);
  table_.assign(slots_, SlotEntry{});
  stats_.capacity_bytes = slots_ * options_.block_bytes;
  for (int64_t i = 0; i * slots_per_file_ < slots_; ++i) {
    if (absl::Status status = OpenFile(i); !status.ok()) return status;
  }
  auto ring = std::make_unique<Ring>();
  if (int ret = io_uring_queue_init(unsigned(options_.queue_depth), &ring->ring, 0); ret < 0) {
    spdlog::warn("rank {}: io_uring_queue_init({}) failed ({}); the disk tier in {} uses pread",
                 options_.rank, options_.queue_depth, std::strerror(-ret), dir);
  } else {
    ring->ok = true;
    ring_ = std::move(ring);
  }
  return absl::OkStatus();
}

// Creates and preallocates file `index`; the first one probes O_DIRECT.
absl::Status DiskPool::OpenFile(int64_t index) {
  const std::string& dir = options_.dir;
  const std::string rank = absl::StrCat("rank ", options_.rank, ": ");
  std::string path = absl::StrCat(dir, "/headwise-kv-rank", options_.rank, "-", getpid(), "-",
                                  instance_, "-", index, ".bin");
  const int flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC;
  int fd = open(path.c_str(), flags | (direct_io_ ? O_DIRECT : 0), 0600);
  if (fd < 0 && direct_io_ && errno == EINVAL) {
    direct_io_ = false;
    spdlog::warn("{}{} refuses O_DIRECT; the disk tier uses buffered I/O", rank, dir);
    fd = open(path.c_str(), flags, 0600);
  }
  if (fd < 0) return ErrnoError(errno, absl::StrCat(rank, "cannot create ", path, " in ", dir));
  files_.push_back(PoolFile{path, FileDescriptor(fd)});  // from here on removed on failure

  const int64_t size = std::min(slots_per_file_, slots_ - index * slots_per_file_) * stride_;
  int err = fallocate(fd, 0, 0, size) == 0 ? 0 : errno;
  if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) err = posix_fallocate(fd, 0, size);
  if ((err == EOPNOTSUPP || err == EINVAL) && ftruncate(fd, size) == 0) err = 0;
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat(
        rank, "cannot preallocate ", size, " bytes for ", path, ": ",
        std::string(std::strerror(err)), " (", FreeBytes(dir), " bytes free in ", dir, ")"));
  }
  if (err != 0) return ErrnoError(err, absl::StrCat(rank, "cannot preallocate ", path));

  if (index == 0 && direct_io_) {  // some filesystems take the flag but fail the I/O
    AlignedBuffer probe = AlignedAlloc(kAlign);
    if (probe == nullptr) return absl::ResourceExhaustedError("out of memory");
    std::memset(probe.get(), 0, kAlign);
    if (pwrite(fd, probe.get(), kAlign, 0) != kAlign) {
      spdlog::warn("{}O_DIRECT write in {} failed ({}); the disk tier uses buffered I/O", rank, dir,
                   std::strerror(errno));
      direct_io_ = false;
      files_.back().fd = FileDescriptor(open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!files_.back().fd.valid()) return ErrnoError(errno, rank + "cannot reopen " + path);
    }
  }
  return absl::OkStatus();
}

DiskPool::Location DiskPool::Locate(int64_t slot) const {
  return Location{&files_[slot / slots_per_file_], (slot % slots_per_file_) * stride_};
}

absl::Status DiskPool::CheckSlot(int64_t slot, bool must_be_written) const {
  if (slot < 0 || slot >= slots_) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options_.rank, ": disk slot ", slot,
                                                   " out of range [0, ", slots_, ")"));
  }
  if (must_be_written && !table_[slot].written) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", options_.rank, ": slot ", slot, " was never written"));
  }
  return absl::OkStatus();
}

std::string DiskPool::Describe(int64_t slot, const BlockTag& tag) const {
  Location at = Locate(slot);
  return absl::StrCat("rank ", options_.rank, ", layer ", tag.layer, ", kv head ", tag.kv_head,
                      ", block ", tag.block, " (disk slot ", slot, ") in file ", at.file->path,
                      " at offset ", at.offset);
}

void DiskPool::SetWritten(int64_t slot, bool written) {
  if (table_[slot].written == written) return;
  table_[slot].written = written;
  stats_.used_bytes += written ? options_.block_bytes : -options_.block_bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.used_bytes);
}

absl::Status DiskPool::Write(int64_t slot, const void* data, BlockTag tag) {
  return WriteMany(std::span<const int64_t>(&slot, 1), std::span<const void* const>(&data, 1),
                   std::span<const BlockTag>(&tag, 1));
}

absl::Status DiskPool::WriteMany(std::span<const int64_t> slots, std::span<const void* const> data,
                                 std::span<const BlockTag> tags) {
  if (data.size() != slots.size() || tags.size() != slots.size()) {
    return absl::InvalidArgumentError(absl::StrCat("WriteMany: ", slots.size(), " slots, ",
                                                   data.size(), " blocks, ", tags.size(), " tags"));
  }
  for (int64_t slot : slots) {
    if (absl::Status status = CheckSlot(slot, false); !status.ok()) return status;
  }
  std::vector<int64_t> sorted(slots.begin(), slots.end());
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options_.rank, ": WriteMany names slot ", *dup, " twice"));
  }
  const int64_t block = options_.block_bytes;
  const size_t depth = size_t(options_.queue_depth);
  AlignedBuffer bounce = AlignedAlloc(std::min(slots.size(), depth) * stride_);
  if (bounce == nullptr && !slots.empty()) return absl::ResourceExhaustedError("out of memory");
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin < slots.size(); begin += depth) {  // bounce holds `depth` blocks
    const size_t count = std::min(slots.size() - begin, depth);
    std::vector<IoOp> ops;
    for (size_t j = 0; j < count; ++j) {
      const int64_t slot = slots[begin + j];
      const auto* src = static_cast<const uint8_t*>(data[begin + j]);
      SetWritten(slot, false);  // until this write lands
      table_[slot].checksum = BlockChecksum(src, block);
      table_[slot].tag = tags[begin + j];
      uint8_t* buf = const_cast<uint8_t*>(src);  // written as is when aligned
      if (block != stride_ || reinterpret_cast<uintptr_t>(src) % kAlign != 0) {
        buf = bounce.get() + j * stride_;
        std::memcpy(buf, src, block);
        std::memset(buf + block, 0, stride_ - block);
      }
      Location at = Locate(slot);
      ops.push_back(
          IoOp{true, at.file->fd.get(), at.offset, buf, stride_, 0, slot, tags[begin + j]});
    }
    IoRunner runner(ring_ ? &ring_->ring : nullptr, options_.queue_depth, ops,
                    [this](const IoOp& op) { return Describe(op.slot, op.tag); });
    runner.Allow(count);
    if (absl::Status status = runner.WaitFor(count); !status.ok()) return status;
    for (size_t j = 0; j < count; ++j) SetWritten(slots[begin + j], true);
    stats_.bytes_written += int64_t(count) * block;
  }
  stats_.write_seconds += Since(t0);
  return absl::OkStatus();
}

void DiskPool::Forget(int64_t slot) {
  if (slot >= 0 && slot < slots_) SetWritten(slot, false);
}

absl::Status DiskPool::Read(int64_t slot, void* dst) {
  const int64_t slots[1] = {slot};
  return Stream(slots, 2 * options_.block_bytes, [&](size_t, size_t, const uint8_t* data) {
    std::memcpy(dst, data, options_.block_bytes);
    return absl::OkStatus();
  });
}

absl::Status DiskPool::Stream(std::span<const int64_t> slots, int64_t window_bytes,
                              const Consumer& consume) {
  if (window_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Stream: negative window ", window_bytes));
  }
  for (int64_t slot : slots) {
    if (absl::Status status = CheckSlot(slot, true); !status.ok()) return status;
  }
  if (slots.empty()) return absl::OkStatus();
  const int64_t block = options_.block_bytes;
  const size_t n = slots.size();
  // A batch is at most a queue's worth: the next one is all in flight while
  // the consumer works on this one.
  const size_t batch = std::min<size_t>(
      {n, size_t(std::max<int64_t>(1, window_bytes / 2 / block)), size_t(options_.queue_depth)});
  if (int64_t(batch) > kInt64Max / 2 / stride_) {
    return absl::InvalidArgumentError(absl::StrCat("Stream: window ", window_bytes, " too large"));
  }
  const int64_t half_bytes = int64_t(batch) * stride_;
  AlignedBuffer window = AlignedAlloc(2 * half_bytes);
  if (window == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("rank ", options_.rank, ": no memory for a ",
                                                     2 * half_bytes, "-byte read window"));
  }
  const auto t0 = std::chrono::steady_clock::now();
  double consume_seconds = 0;
  std::vector<IoOp> ops(n);
  for (size_t i = 0; i < n; ++i) {  // batch b lands in half b % 2
    Location at = Locate(slots[i]);
    uint8_t* buf = window.get() + (i / batch) % 2 * half_bytes + i % batch * stride_;
    ops[i] =
        IoOp{false, at.file->fd.get(), at.offset, buf, stride_, 0, slots[i], table_[slots[i]].tag};
  }
  absl::Status status;
  size_t delivered = 0;
  {
    IoRunner runner(ring_ ? &ring_->ring : nullptr, options_.queue_depth, ops,
                    [this](const IoOp& op) { return Describe(op.slot, op.tag); });
    for (size_t first = 0; first < n && status.ok(); first += batch) {
      const size_t count = std::min(batch, n - first);
      runner.Allow(first + count + batch);  // this batch and the next (the other half)
      status = runner.WaitFor(first + count);
      uint8_t* data = window.get() + (first / batch) % 2 * half_bytes;
      for (size_t j = 0; j < count && status.ok(); ++j) {
        const SlotEntry& entry = table_[slots[first + j]];
        const uint64_t computed = BlockChecksum(data + j * stride_, block);
        if (computed == entry.checksum) continue;
        ++stats_.checksum_failures;
        status = absl::DataLossError(
            absl::StrCat("checksum mismatch reading ", Describe(slots[first + j], entry.tag),
                         ": stored ", Hex(entry.checksum), ", computed ", Hex(computed)));
      }
      if (!status.ok()) break;
      for (size_t j = 1; j < count && block != stride_; ++j) {
        std::memmove(data + j * block, data + j * stride_, block);  // pack
      }
      const auto c0 = std::chrono::steady_clock::now();
      status = consume(first, count, data);
      consume_seconds += Since(c0);
      delivered += count;
    }
  }                                  // waits out reads still in flight before the window is freed
  stats_.read_seconds += Since(t0);  // with the consumer: the rate KV came off the disk
  stats_.consume_seconds += consume_seconds;
  stats_.bytes_read += int64_t(delivered) * block;
  return status;
}

DiskStats DiskPool::stats() const { return stats_; }

// ------------------------------------------------- MeasureSequentialReadGbps

absl::StatusOr<double> MeasureSequentialReadGbps(const std::string& dir, int64_t bytes) {
  constexpr int64_t kChunk = int64_t{4} << 20;
  constexpr int kDepth = 8;
  if (bytes <= 0 || bytes > kInt64Max / 2) {
    return absl::InvalidArgumentError(absl::StrCat("read probe of ", bytes, " bytes"));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), absl::StrCat("mkdir ", dir));
  const int64_t size = AlignUp(bytes);
  const std::string path = absl::StrCat(dir, "/headwise-seqread-", getpid(), ".bin");
  struct Remove {
    const std::string& path;
    ~Remove() { unlink(path.c_str()); }
  } remove{path};
  AlignedBuffer buf = AlignedAlloc(kDepth * kChunk);
  if (buf == nullptr) return absl::ResourceExhaustedError("no memory for the read probe");
  for (int64_t i = 0; i < kDepth * kChunk; ++i) buf.get()[i] = uint8_t(i * 2654435761u >> 13);
  {
    FileDescriptor out(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out.valid()) return ErrnoError(errno, absl::StrCat("cannot create ", path));
    for (int64_t off = 0; off < size; off += kChunk) {
      const int64_t n = std::min(kChunk, size - off);
      const int64_t ret = TransferFull(true, out.get(), buf.get(), n, off);
      if (ret != n) return ErrnoError(ret < 0 ? int(-ret) : ENOSPC, "writing " + path);
    }
    if (fsync(out.get()) != 0) return ErrnoError(errno, "fsync " + path);
  }
  FileDescriptor in(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
  if (!in.valid() && errno == EINVAL) {
    in = FileDescriptor(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.valid()) posix_fadvise(in.get(), 0, 0, POSIX_FADV_DONTNEED);
  }
  if (!in.valid()) return ErrnoError(errno, absl::StrCat("cannot open ", path));

  UringOwner uring;
  uring.ok = io_uring_queue_init(kDepth, &uring.ring, 0) == 0;
  std::vector<IoOp> ops;
  for (int64_t off = 0; off < size; off += kChunk) {
    uint8_t* dst = buf.get() + ops.size() % kDepth * kChunk;
    ops.push_back(IoOp{false, in.get(), off, dst, std::min(kChunk, size - off), 0, -1, {}});
  }
  const auto t0 = std::chrono::steady_clock::now();
  IoRunner runner(uring.ok ? &uring.ring : nullptr, kDepth, ops, [&](const IoOp& op) {
    return absl::StrCat("read probe ", path, " at offset ", op.offset);
  });
  for (size_t i = 0; i < ops.size(); ++i) {
    runner.Allow(i + kDepth);  // op i + kDepth reuses op i's buffer
    if (absl::Status status = runner.WaitFor(i + 1); !status.ok()) return status;
  }
  return double(size) / std::max(Since(t0), 1e-9) / 1e9;
}

}  // namespace headwise::kv
