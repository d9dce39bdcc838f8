// The snapshot block file; see block_file.h for the layout.
#include "runtime/kv/block_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace headwise::kv {

using block_io::AlignUp;
using block_io::ErrnoError;
using block_io::Hex;
using block_io::TransferFull;

namespace {

struct FileHeader {
  char magic[8] = {'H', 'W', 'K', 'V', 'S', 'N', 'P', '1'};
  uint32_t version = 1;
  uint32_t reserved = 0;
  int64_t block_bytes = 0;
  int64_t n_blocks = 0;
};
static_assert(sizeof(FileHeader) == 32 && sizeof(BlockFileEntry) == 24);
constexpr int64_t kMaxSnapshotBytes = int64_t{1} << 50;

int64_t DataOffset(int64_t n_blocks) {
  return AlignUp(int64_t(sizeof(FileHeader) + sizeof(BlockFileEntry) * n_blocks));
}

}  // namespace

absl::StatusOr<BlockFileWriter> BlockFileWriter::Create(const std::string& path,
                                                        int64_t block_bytes, int64_t n_blocks) {
  if (block_bytes <= 0 || n_blocks < 0 || block_bytes > kMaxSnapshotBytes ||
      n_blocks > kMaxSnapshotBytes / AlignUp(block_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot ", path, ": ", n_blocks, " blocks of ", block_bytes, " bytes"));
  }
  BlockFileWriter writer;
  writer.path_ = path;
  writer.fd_ =
      FileDescriptor(open((path + ".tmp").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!writer.fd_.valid()) return ErrnoError(errno, "cannot create " + path + ".tmp");
  writer.block_bytes_ = block_bytes;
  writer.data_offset_ = DataOffset(n_blocks);
  writer.index_.resize(n_blocks);
  writer.put_.resize(n_blocks);
  return writer;
}

BlockFileWriter::~BlockFileWriter() {
  if (!fd_.valid()) return;
  fd_.Reset();
  unlink((path_ + ".tmp").c_str());
}

absl::Status BlockFileWriter::Put(int64_t index, const void* data, BlockTag tag) {
  if (!fd_.valid()) return absl::FailedPreconditionError("snapshot " + path_ + " is finished");
  if (index < 0 || index >= int64_t(put_.size()) || put_[index]) {
    return absl::Status(index >= 0 && index < int64_t(put_.size())
                            ? absl::StatusCode::kFailedPrecondition
                            : absl::StatusCode::kInvalidArgument,
                        absl::StrCat("snapshot ", path_, ": block index ", index,
                                     " put twice or out of range [0, ", put_.size(), ")"));
  }
  const int64_t offset = data_offset_ + index * AlignUp(block_bytes_);
  const int64_t ret = TransferFull(true, fd_.get(), static_cast<uint8_t*>(const_cast<void*>(data)),
                                   block_bytes_, offset);
  if (ret != block_bytes_) {
    return ErrnoError(ret < 0 ? int(-ret) : EIO,
                      absl::StrCat("writing ", path_, ".tmp at offset ", offset));
  }
  index_[index] = BlockFileEntry{tag, 0, BlockChecksum(data, block_bytes_)};
  put_[index] = true;
  return absl::OkStatus();
}

absl::Status BlockFileWriter::Finish() {
  if (!fd_.valid()) return absl::FailedPreconditionError("snapshot " + path_ + " is finished");
  const int64_t n = int64_t(put_.size());
  if (auto missing = std::find(put_.begin(), put_.end(), false); missing != put_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot ", path_, ": block index ",
                                                      missing - put_.begin(), " was never put"));
  }
  FileHeader header;
  header.block_bytes = block_bytes_;
  header.n_blocks = n;
  std::vector<uint8_t> head(sizeof(header) + sizeof(BlockFileEntry) * n);
  std::memcpy(head.data(), &header, sizeof(header));
  if (n > 0) std::memcpy(head.data() + sizeof(header), index_.data(), sizeof(BlockFileEntry) * n);
  const std::string tmp = path_ + ".tmp";
  if (TransferFull(true, fd_.get(), head.data(), int64_t(head.size()), 0) != int64_t(head.size()) ||
      ftruncate(fd_.get(), data_offset_ + n * AlignUp(block_bytes_)) != 0 ||
      fsync(fd_.get()) != 0) {
    return ErrnoError(errno, "writing the index of " + tmp);
  }
  if (rename(tmp.c_str(), path_.c_str()) != 0) {
    return ErrnoError(errno, absl::StrCat("renaming ", tmp, " to ", path_));
  }
  fd_.Reset();  // finished: nothing left to remove
  std::string parent = std::filesystem::path(path_).parent_path().string();
  FileDescriptor dir(open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY));
  if (!dir.valid() || fsync(dir.get()) != 0) {
    spdlog::warn("cannot fsync the directory of {}: {}", path_, std::strerror(errno));
  }
  return absl::OkStatus();
}

absl::StatusOr<BlockFileReader> BlockFileReader::Open(const std::string& path) {
  BlockFileReader reader;
  reader.path_ = path;
  reader.fd_ = FileDescriptor(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!reader.fd_.valid() || fstat(reader.fd_.get(), &st) != 0) {
    return ErrnoError(errno, "cannot open snapshot " + path);
  }
  const int64_t size = st.st_size;
  FileHeader header, expected_header;
  if (TransferFull(false, reader.fd_.get(), reinterpret_cast<uint8_t*>(&header), sizeof(header),
                   0) != int64_t(sizeof(header))) {
    return absl::DataLossError(
        absl::StrCat("snapshot ", path, " is truncated: ", size, " bytes, less than its header"));
  }
  if (std::memcmp(header.magic, expected_header.magic, 8) != 0) {
    return absl::DataLossError(absl::StrCat("snapshot ", path, ": bad magic (not HWKVSNP1)"));
  }
  const int64_t n = header.n_blocks, block = header.block_bytes;
  if (header.version != 1 || block <= 0 || block > kMaxSnapshotBytes || n < 0 ||
      n > kMaxSnapshotBytes / AlignUp(block)) {
    return absl::DataLossError(
        absl::StrFormat("snapshot %s: bad header (version %d, block_bytes %d, n_blocks %d)", path,
                        header.version, block, n));
  }
  reader.block_bytes_ = block;
  reader.data_offset_ = DataOffset(n);
  if (const int64_t expected = reader.data_offset_ + n * AlignUp(block); size < expected) {
    return absl::DataLossError(
        absl::StrCat("snapshot ", path, " is truncated: ", size, " bytes, expected ", expected));
  }
  reader.index_.resize(n);
  const int64_t index_bytes = int64_t(sizeof(BlockFileEntry)) * n;
  if (TransferFull(false, reader.fd_.get(), reinterpret_cast<uint8_t*>(reader.index_.data()),
                   index_bytes, sizeof(header)) != index_bytes) {
    return ErrnoError(errno, "reading the index of " + path);
  }
  return reader;
}

absl::Status BlockFileReader::Read(int64_t index, void* dst) {
  if (index < 0 || index >= n_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot ", path_, ": block index ", index,
                                                   " out of range [0, ", n_blocks(), ")"));
  }
  const BlockFileEntry& entry = index_[index];
  const int64_t offset = data_offset_ + index * AlignUp(block_bytes_);
  const std::string where = absl::StrCat("snapshot ", path_, " block index ", index, " (layer ",
                                         entry.tag.layer, ", kv head ", entry.tag.kv_head,
                                         ", block ", entry.tag.block, ") at offset ", offset);
  const int64_t got =
      TransferFull(false, fd_.get(), static_cast<uint8_t*>(dst), block_bytes_, offset);
  if (got < 0) return ErrnoError(int(-got), "reading " + where);
  if (got != block_bytes_) {
    return absl::DataLossError(
        absl::StrCat("short read (", got, " of ", block_bytes_, " bytes) of ", where));
  }
  if (uint64_t computed = BlockChecksum(dst, block_bytes_); computed != entry.checksum) {
    return absl::DataLossError(absl::StrCat("checksum mismatch in ", where, ": stored ",
                                            Hex(entry.checksum), ", computed ", Hex(computed)));
  }
  return absl::OkStatus();
}

}  // namespace headwise::kv
