// The snapshot block file (sessions persisted by `close --persist`): one
// rank's blocks of one session with their tags and checksums, written to a
// temporary name and renamed into place, so a file is whole or absent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv/block_io.h"

namespace headwise::kv {

// A snapshot file of checksummed blocks (host-endian):
//   header  {char magic[8] = "HWKVSNP1", u32 version = 1, u32 reserved = 0,
//            i64 block_bytes, i64 n_blocks}                       (32 bytes)
//   index   n_blocks x {i32 layer, i32 kv_head, i32 block, u32 pad,
//            u64 checksum}                                        (24 bytes each)
//   blocks  from the first 4096-aligned offset after the index, at a stride
//           of block_bytes rounded up to 4096.
// Buffered I/O.
struct BlockFileEntry {  // one index entry, as stored
  BlockTag tag;
  uint32_t pad = 0;
  uint64_t checksum = 0;
};

class BlockFileWriter {
 public:
  // Writes to path + ".tmp" until Finish. InvalidArgument for block_bytes <= 0
  // or n_blocks < 0; errno errors name the path.
  static absl::StatusOr<BlockFileWriter> Create(const std::string& path, int64_t block_bytes,
                                                int64_t n_blocks);
  BlockFileWriter(BlockFileWriter&&) = default;
  BlockFileWriter& operator=(BlockFileWriter&&) = default;  // keeps the target's .tmp
  ~BlockFileWriter();  // removes the .tmp file unless Finish succeeded

  // Any order, each index once (FailedPrecondition for a second Put or after
  // Finish; InvalidArgument out of range).
  absl::Status Put(int64_t index, const void* data, BlockTag tag);
  // FailedPrecondition naming the first index never Put; else writes the
  // index, fsyncs, renames path+".tmp" -> path (atomic) and fsyncs the dir.
  absl::Status Finish();

 private:
  BlockFileWriter() = default;

  std::string path_;
  FileDescriptor fd_;  // invalid once finished
  int64_t block_bytes_ = 0;
  int64_t data_offset_ = 0;
  std::vector<BlockFileEntry> index_;
  std::vector<bool> put_;
};

class BlockFileReader {
 public:
  // NotFound naming the path for a missing file; DataLoss naming the path for
  // bad magic, an unknown version, a bad header or a truncated file.
  static absl::StatusOr<BlockFileReader> Open(const std::string& path);
  BlockFileReader(BlockFileReader&&) = default;
  BlockFileReader& operator=(BlockFileReader&&) = default;

  int64_t n_blocks() const { return static_cast<int64_t>(index_.size()); }
  int64_t block_bytes() const { return block_bytes_; }
  BlockTag tag(int64_t index) const { return index_[index].tag; }  // index in [0, n_blocks)
  // Reads block `index` into dst (block_bytes) and verifies the checksum:
  // DataLoss naming path, index, tag (layer/head/block) and file offset on a
  // mismatch or short read; InvalidArgument out of range.
  absl::Status Read(int64_t index, void* dst);

 private:
  BlockFileReader() = default;

  std::string path_;
  FileDescriptor fd_;
  int64_t block_bytes_ = 0;
  int64_t data_offset_ = 0;
  std::vector<BlockFileEntry> index_;
};

}  // namespace headwise::kv
