#include "runtime/kv/block_io.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace headwise::kv {

uint64_t BlockChecksum(const void* data, int64_t bytes) {
  return XXH3_64bits(data, static_cast<size_t>(bytes));
}

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    Reset();
    std::swap(fd_, other.fd_);
  }
  return *this;
}

void FileDescriptor::Reset() {
  if (fd_ >= 0 && close(fd_) != 0) spdlog::warn("close(fd {}): {}", fd_, std::strerror(errno));
  fd_ = -1;
}

namespace block_io {

std::string Hex(uint64_t value) { return absl::StrFormat("0x%016x", value); }

absl::Status ErrnoError(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", std::string(std::strerror(err)));
  return err == EIO ? absl::DataLossError(msg) : absl::Status(absl::ErrnoToStatusCode(err), msg);
}

namespace {
constexpr int64_t kMaxOpBytes = int64_t{1} << 30;  // one pread/pwrite at most
}  // namespace

int64_t TransferFull(bool write, int fd, uint8_t* buf, int64_t len, int64_t offset) {
  int64_t done = 0;
  while (done < len) {
    int64_t n = std::min(len - done, kMaxOpBytes);
    ssize_t got =
        write ? pwrite(fd, buf + done, n, offset + done) : pread(fd, buf + done, n, offset + done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return -errno;
    if (got == 0) break;
    done += got;
  }
  return done;
}

}  // namespace block_io
}  // namespace headwise::kv
