// The call kinds of the coordinator <-> memory rank protocol and the byte
// writer/reader their bodies are built with. Every call starts with a u32
// kind; integers and floats travel in host byte order (ranks of one cluster
// share an architecture). Readers fail for good at the first short read, so
// a malformed request is refused, never read past its end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/kv_transport.h"

namespace headwise::kv {

enum class CallKind : uint32_t {
  kDelegate = 1,
  kPing = 2,
  kProbe = 3,
  kStats = 4,
  kStop = 5,
  kDemote = 6,        // host pool slots -> disk slots on that rank
  kDiskWrite = 7,     // the block's bytes -> a disk slot
  kFetch = 8,         // disk slots -> their bytes in the reply
  kSnapshotSave = 9,  // pool/disk slots -> a block file
  kSnapshotLoad = 10  // a block file -> pool/disk slots
};

class WireWriter {
 public:
  explicit WireWriter(CallKind kind) { Put(static_cast<uint32_t>(kind)); }
  WireWriter() = default;
  template <typename T>
  void Put(const T& value) {
    PutArray(&value, 1);
  }
  // GCC 12 at -O2/-O3 sees a copy into a vector it believes empty and
  // warns (stringop-overflow, restrict: known false positives of its value
  // ranges after inlining).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"
  template <typename T>
  void PutArray(const T* data, size_t n) {
    if (n == 0) return;
    const size_t at = bytes_.size();
    bytes_.resize(at + n * sizeof(T));
    std::memcpy(bytes_.data() + at, data, n * sizeof(T));
  }
#pragma GCC diagnostic pop
  void PutString(const std::string& s) {
    Put(static_cast<uint32_t>(s.size()));
    PutArray(s.data(), s.size());
  }
  std::vector<std::byte> Take() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
};

// Reads fields in order; a read past the end fails the reader for good.
class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* value) {
    if (!ok_ || bytes_.size() - at_ < sizeof(T)) return ok_ = false;
    std::memcpy(value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  // A pointer to n bytes in place (unaligned: callers memcpy), or null.
  const std::byte* Take(uint64_t n_bytes) {
    if (!ok_ || bytes_.size() - at_ < n_bytes) {
      ok_ = false;
      return nullptr;
    }
    const std::byte* p = bytes_.data() + at_;
    at_ += n_bytes;
    return p;
  }
  bool GetString(std::string* s, uint32_t max_bytes = 4096) {
    uint32_t n = 0;
    if (!Get(&n) || n > max_bytes) return ok_ = false;
    const std::byte* p = Take(n);
    if (p == nullptr) return false;
    s->assign(reinterpret_cast<const char*>(p), n);
    return true;
  }
  bool ok() const { return ok_; }
  size_t remaining() const { return bytes_.size() - at_; }

 private:
  std::span<const std::byte> bytes_;
  size_t at_ = 0;
  bool ok_ = true;
};

// Issues `request` to `rank` and waits for the reply (bounded by the
// transport's peer timeout).
inline absl::StatusOr<std::vector<std::byte>> Call(comm::KvTransport& transport, int rank,
                                                   std::vector<std::byte> request) {
  std::vector<std::byte> reply;
  absl::StatusOr<comm::RmaTicket> ticket = transport.PostCall(rank, std::move(request), &reply);
  if (!ticket.ok()) return ticket.status();
  if (absl::Status s = transport.Wait(*ticket); !s.ok()) return s;
  return reply;
}

}  // namespace headwise::kv
