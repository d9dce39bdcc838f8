// The SSD tier of one rank: KV blocks in preallocated scratch files, written
// and read with O_DIRECT through io_uring (buffered / pread fallbacks), each
// block checksummed (XXH3-64, block_io.h) so a bad sector surfaces as
// DataLoss naming the block and file offset instead of as wrong attention.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/block_io.h"

namespace headwise::kv {

struct DiskPoolOptions {
  std::string dir;             // created if missing
  int64_t capacity_bytes = 0;  // rounded down to whole blocks; < 1 block -> InvalidArgument
  int64_t block_bytes = 0;     // bytes of one block (K then V); any positive size
  int32_t rank = 0;            // names the files and appears in errors
  int32_t queue_depth = 128;   // io_uring SQ entries / max I/Os in flight
  int64_t file_bytes = int64_t{1} << 30;  // blocks live in preallocated files of up to this size
  // Try O_DIRECT (false: buffered I/O, as on a filesystem that refuses it).
  bool direct_io = true;
};

// Byte counts are payload (block_bytes per block), not the aligned on-disk
// stride. Seconds are wall time inside the pool; a Stream's read time
// includes its consumer's (what was computed on the blocks as they came), so
// read_gbps is the rate KV came off the disk, and consume_seconds says how
// much of it was the consumer's.
struct DiskStats {
  int64_t capacity_bytes = 0;  // slots() * block_bytes()
  int64_t used_bytes = 0;      // slots holding a written block (not Forgotten) * block_bytes
  int64_t peak_bytes = 0;      // the most used_bytes has been
  int64_t bytes_written = 0;
  int64_t bytes_read = 0;
  double write_seconds = 0;
  double read_seconds = 0;
  double consume_seconds = 0;
  int64_t checksum_failures = 0;

  double read_gbps() const { return read_seconds > 0 ? bytes_read / read_seconds / 1e9 : 0; }
  double write_gbps() const { return write_seconds > 0 ? bytes_written / write_seconds / 1e9 : 0; }
};

class DiskPool {
 public:
  // Creates (or truncates) files `headwise-kv-rank<r>-<pid>-<n>-<i>.bin` in dir
  // (n: this pool's number in the process),
  // preallocated (fallocate, posix_fallocate, else ftruncate), each holding
  // up to file_bytes / stride slots (at least one; a block never straddles
  // two files). stride = block_bytes rounded up to 4096, in buffered mode too.
  // Files are O_DIRECT when the filesystem accepts it (probed with one
  // aligned write), else buffered (one spdlog::warn naming the dir). I/O goes
  // through io_uring with queue_depth entries, else pread/pwrite (one warn).
  // InvalidArgument for bad options or capacity < one block;
  // ResourceExhausted naming bytes asked and free (statvfs) when the disk
  // cannot hold the files; other errors name the dir and errno text.
  static absl::StatusOr<std::unique_ptr<DiskPool>> Create(const DiskPoolOptions& options);
  ~DiskPool();  // closes and unlinks its files (they are scratch)
  DiskPool(const DiskPool&) = delete;
  DiskPool& operator=(const DiskPool&) = delete;

  int64_t slots() const { return slots_; }  // capacity in blocks
  int64_t block_bytes() const { return options_.block_bytes; }
  bool direct_io() const { return direct_io_; }
  bool uring() const { return ring_ != nullptr; }
  const std::string& dir() const { return options_.dir; }

  // Slot allocation is the caller's (its placement ledger hands out slots).
  // One thread uses a pool at a time (thread-compatible).
  //
  // Writes block `slot` from `data` (block_bytes, any alignment; unaligned
  // data goes through an aligned bounce buffer) and records its checksum and
  // tag. InvalidArgument for a slot out of range. On failure the slot reads
  // as never written.
  absl::Status Write(int64_t slot, const void* data, BlockTag tag);
  // Several writes with up to queue_depth in flight, same contract; the spans
  // have equal sizes and the slots are distinct (else InvalidArgument, before
  // any I/O).
  absl::Status WriteMany(std::span<const int64_t> slots, std::span<const void* const> data,
                         std::span<const BlockTag> tags);
  // Marks a slot empty: reads of it fail FailedPrecondition. Out of range: no-op.
  void Forget(int64_t slot);
  // Reads slot into dst (block_bytes, any alignment) and verifies the
  // checksum. DataLoss on a mismatch or short read, naming rank, layer, kv
  // head, block, file path, byte offset in the file and (mismatch) the stored
  // and computed checksums in hex; I/O errors likewise, coded by errno (EIO:
  // DataLoss). FailedPrecondition for a slot never written. dst's contents
  // are unspecified on error. (A one-block Stream: reads via a bounce buffer.)
  absl::Status Read(int64_t slot, void* dst);

  // Streams `slots` in order through a read-ahead window of ~window_bytes,
  // split in two ping-pong halves of batch = max(1, window_bytes / 2 /
  // block_bytes) blocks (capped at slots.size() and queue_depth): while the
  // caller consumes batch i, all of batch i+1's reads are in flight.
  // Batch boundaries depend only on (slots.size(), window_bytes, block_bytes,
  // queue_depth).
  // `consume(first, n, data)` runs on the calling thread, in order, once per
  // batch, with blocks [first, first+n) of `slots` packed in `data` at stride
  // block_bytes() (blocks whose size is not a multiple of 4096 are read into
  // aligned spots and compacted in place first); `data` is valid only during
  // the call. Every block's checksum is verified before it is handed out.
  // Slots are checked before any I/O (InvalidArgument out of range,
  // FailedPrecondition never written); the first error from a read or from
  // consume stops the stream and is returned once in-flight reads finish.
  // InvalidArgument for a negative window.
  using Consumer = std::function<absl::Status(size_t first, size_t n, const uint8_t* data)>;
  absl::Status Stream(std::span<const int64_t> slots, int64_t window_bytes,
                      const Consumer& consume);

  DiskStats stats() const;  // bytes/seconds accumulate over Write*/Read/Stream

 private:
  struct Ring;  // io_uring, defined in disk_pool.cc
  struct PoolFile {
    std::string path;
    FileDescriptor fd;
  };
  struct SlotEntry {
    bool written = false;
    uint64_t checksum = 0;
    BlockTag tag;
  };
  struct Location {
    const PoolFile* file;
    int64_t offset;
  };
  explicit DiskPool(const DiskPoolOptions& options);
  absl::Status Init();
  absl::Status OpenFile(int64_t index);
  Location Locate(int64_t slot) const;
  absl::Status CheckSlot(int64_t slot, bool must_be_written) const;
  std::string Describe(int64_t slot, const BlockTag& tag) const;
  void SetWritten(int64_t slot, bool written);

  DiskPoolOptions options_;
  int64_t instance_ = 0;  // names the files
  int64_t stride_ = 0;
  int64_t slots_ = 0;
  int64_t slots_per_file_ = 0;
  bool direct_io_ = true;
  std::unique_ptr<Ring> ring_;
  std::vector<PoolFile> files_;
  std::vector<SlotEntry> table_;
  DiskStats stats_;
};

// Reads `bytes` sequentially (4 MiB O_DIRECT reads, queue depth 8, io_uring
// when available) from a scratch file of that size (rounded up to 4096)
// written and fsynced in `dir` first, and returns GB/s (1e9 bytes/s) of the
// reads alone; removes the file. The baseline the disk tier is measured
// against (bench) and the cost model's disk probe. Falls back to buffered
// reads after posix_fadvise(DONTNEED) if O_DIRECT is refused.
absl::StatusOr<double> MeasureSequentialReadGbps(const std::string& dir, int64_t bytes);

}  // namespace headwise::kv
