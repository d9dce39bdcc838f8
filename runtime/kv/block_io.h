// What every stored KV block shares, in the disk tier (disk_pool.h) and in
// snapshot files (block_file.h): its tag in error messages, its checksum,
// the file descriptor owner, and the few I/O helpers both use.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace headwise::kv {

// Identifies a block in error messages: (layer, kv head, block index).
struct BlockTag {
  int32_t layer = -1;
  int32_t kv_head = -1;
  int32_t block = -1;
};

// The one checksum of stored blocks (pool slots and snapshot files):
// XXH3_64bits of the block's bytes.
uint64_t BlockChecksum(const void* data, int64_t bytes);

// A file descriptor with one owner; closes on destruction (failures logged).
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset();

 private:
  int fd_ = -1;
};

namespace block_io {

inline constexpr int64_t kAlign = 4096;  // O_DIRECT offsets, lengths and buffers
inline int64_t AlignUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
// "0x" and 16 hex digits.
std::string Hex(uint64_t value);
// EIO is DataLoss (a bad sector); the rest map as absl does (ENOSPC ->
// ResourceExhausted, ENOENT -> NotFound, ...).
absl::Status ErrnoError(int err, const std::string& what);
// pread/pwrite until `len` bytes, end of file or an error: bytes moved or -errno.
int64_t TransferFull(bool write, int fd, uint8_t* buf, int64_t len, int64_t offset);

}  // namespace block_io
}  // namespace headwise::kv
