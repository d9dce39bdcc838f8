// The disk tier and snapshot block file on the real filesystem (a fresh temp
// dir per test): round trips at aligned and unaligned block sizes across
// several files, Stream's deterministic batches, on-disk corruption surfacing
// as DataLoss naming the block and offset, and bad options. Fresh random
// block contents each run (the seed is printed on failure).
#include "runtime/kv/disk_pool.h"
#include "runtime/kv/block_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::kv {
namespace {

using ::testing::HasSubstr;

int64_t AlignUp(int64_t n) { return (n + 4095) / 4096 * 4096; }

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& parent = ::testing::TempDir()) {
    std::string pattern = (std::filesystem::path(parent) / "headwise-disk-XXXXXX").string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> Files() const {
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

 private:
  std::string path_;
};

// Blocks of random bytes, one per slot.
class RandomBlocks {
 public:
  RandomBlocks(int64_t n, int64_t block_bytes) : block_bytes_(block_bytes) {
    std::random_device device;
    seed_ = device();
    std::mt19937_64 rng(seed_);
    data_.resize(n * block_bytes);
    for (uint8_t& byte : data_) byte = uint8_t(rng());
  }
  const uint8_t* block(int64_t i) const { return data_.data() + i * block_bytes_; }
  std::string seed() const { return "seed " + std::to_string(seed_); }

 private:
  int64_t block_bytes_;
  uint64_t seed_;
  std::vector<uint8_t> data_;
};

BlockTag TagOf(int64_t slot) {
  return BlockTag{int32_t(slot % 4), int32_t(slot % 3), int32_t(slot)};
}

DiskPoolOptions Options(const std::string& dir, int64_t block_bytes, int64_t n_slots) {
  DiskPoolOptions options;
  options.dir = dir;
  options.block_bytes = block_bytes;
  options.capacity_bytes = n_slots * block_bytes + block_bytes / 2;  // rounded down
  options.rank = 2;
  options.queue_depth = 4;
  options.file_bytes = 3 * AlignUp(block_bytes);
  return options;
}

// Writes every slot (half through Write, half through WriteMany, in a shuffled order).
void WriteAll(DiskPool& pool, const RandomBlocks& blocks) {
  std::vector<int64_t> order(pool.slots());
  for (int64_t i = 0; i < pool.slots(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  const size_t half = order.size() / 2;
  for (size_t i = 0; i < half; ++i) {
    ASSERT_TRUE(pool.Write(order[i], blocks.block(order[i]), TagOf(order[i])).ok());
  }
  std::vector<int64_t> slots(order.begin() + half, order.end());
  std::vector<const void*> data;
  std::vector<BlockTag> tags;
  for (int64_t slot : slots) {
    data.push_back(blocks.block(slot));
    tags.push_back(TagOf(slot));
  }
  absl::Status status = pool.WriteMany(slots, data, tags);
  ASSERT_TRUE(status.ok()) << status;
}

class DiskPoolSizeTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(DiskPoolSizeTest, RoundTripAcrossFiles) {
  const int64_t block = GetParam();
  ScratchDir dir;
  ASSERT_FALSE(dir.path().empty());
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(Options(dir.path(), block, 10));
  ASSERT_TRUE(pool.ok()) << pool.status();
  DiskPool& disk = **pool;
  EXPECT_EQ(disk.slots(), 10);
  EXPECT_EQ(dir.Files().size(), 4u);  // 3 + 3 + 3 + 1 slots
  RandomBlocks blocks(10, block);
  SCOPED_TRACE(blocks.seed());
  WriteAll(disk, blocks);

  std::vector<uint8_t> out(block + 1);
  for (int64_t slot = 0; slot < 10; ++slot) {
    std::fill(out.begin(), out.end(), 0xA5);                // poisoned
    absl::Status status = disk.Read(slot, out.data() + 1);  // unaligned destination
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(std::memcmp(out.data() + 1, blocks.block(slot), block), 0) << "slot " << slot;
  }
  DiskStats stats = disk.stats();
  EXPECT_EQ(stats.capacity_bytes, 10 * block);
  EXPECT_EQ(stats.used_bytes, 10 * block);
  EXPECT_EQ(stats.bytes_written, 10 * block);
  EXPECT_EQ(stats.bytes_read, 10 * block);
  EXPECT_EQ(stats.checksum_failures, 0);

  disk.Forget(4);
  absl::Status status = disk.Read(4, out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("slot 4 was never written"));
  EXPECT_EQ(disk.stats().used_bytes, 9 * block);
  EXPECT_EQ(disk.stats().peak_bytes, 10 * block);
  // Overwriting a slot replaces its contents and checksum.
  ASSERT_TRUE(disk.Write(4, blocks.block(5), TagOf(4)).ok());
  ASSERT_TRUE(disk.Read(4, out.data()).ok());
  EXPECT_EQ(std::memcmp(out.data(), blocks.block(5), block), 0);

  pool->reset();
  EXPECT_TRUE(dir.Files().empty()) << "the pool removes its scratch files";
}

TEST_P(DiskPoolSizeTest, StreamBatchesAreDeterministic) {
  const int64_t block = GetParam();
  ScratchDir dir;
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(Options(dir.path(), block, 9));
  ASSERT_TRUE(pool.ok()) << pool.status();
  RandomBlocks blocks(9, block);
  SCOPED_TRACE(blocks.seed());
  WriteAll(**pool, blocks);
  const std::vector<int64_t> slots = {8, 0, 3, 3, 5, 1, 7, 2, 6, 4, 0};
  const size_t n = slots.size();

  struct Case {
    int64_t window;
    size_t batch;
  };
  // Batches are half the window, at most the queue depth (4 here).
  for (Case c : {Case{block / 2, 1}, Case{2 * block + 1, 1}, Case{6 * block, 3},
                 Case{7 * block + 5, 3}, Case{1000 * block, 4}, Case{0, 1}}) {
    SCOPED_TRACE("window " + std::to_string(c.window));
    size_t next = 0, calls = 0;
    absl::Status status =
        (*pool)->Stream(slots, c.window, [&](size_t first, size_t count, const uint8_t* data) {
          EXPECT_EQ(first, next);
          EXPECT_EQ(count, std::min(c.batch, n - first));
          for (size_t j = 0; j < count; ++j) {
            EXPECT_EQ(std::memcmp(data + j * block, blocks.block(slots[first + j]), block), 0)
                << "block " << first + j;
          }
          next = first + count;
          ++calls;
          return absl::OkStatus();
        });
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(next, n);
    EXPECT_EQ(calls, (n + c.batch - 1) / c.batch);
  }

  // A consumer error stops the stream and comes back as is.
  size_t calls = 0;
  absl::Status status =
      (*pool)->Stream(slots, 2 * block, [&](size_t first, size_t, const uint8_t*) {
        ++calls;
        return first == 2 ? absl::AbortedError("consumer stops") : absl::OkStatus();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(calls, 3u);
  EXPECT_EQ((*pool)->Stream(slots, -1, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*pool)->Stream({}, block, nullptr).ok());
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, DiskPoolSizeTest, ::testing::Values(4096, 12288, 6000));

TEST(DiskPoolTest, CorruptBlockIsDataLossNamingIt) {
  const int64_t block = 6000, stride = 8192;
  ScratchDir dir;
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(Options(dir.path(), block, 9));
  ASSERT_TRUE(pool.ok()) << pool.status();
  RandomBlocks blocks(9, block);
  SCOPED_TRACE(blocks.seed());
  const BlockTag tag{3, 1, 7};
  ASSERT_TRUE((*pool)->Write(7, blocks.block(7), tag).ok());
  ASSERT_TRUE((*pool)->Write(6, blocks.block(6), TagOf(6)).ok());

  // Slot 7 is the second slot of the third file (3 slots per file).
  std::vector<std::string> files = dir.Files();
  auto file = std::find_if(files.begin(), files.end(),
                           [](const std::string& f) { return f.ends_with("-2.bin"); });
  ASSERT_NE(file, files.end());
  const int64_t offset = 1 * stride;
  int fd = open(file->c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint8_t byte = blocks.block(7)[100] ^ 0x10;
  ASSERT_EQ(pwrite(fd, &byte, 1, offset + 100), 1);
  close(fd);

  std::vector<uint8_t> out(block);
  absl::Status read = (*pool)->Read(7, out.data());
  std::vector<uint8_t> streamed;
  const std::vector<int64_t> slots = {6, 7};
  absl::Status stream = (*pool)->Stream(slots, 4 * block, [&](size_t, size_t, const uint8_t*) {
    ADD_FAILURE() << "a corrupt batch was handed out";
    return absl::OkStatus();
  });
  for (const absl::Status& status : {read, stream}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(status.message(), HasSubstr("rank 2"));
    EXPECT_THAT(status.message(), HasSubstr("layer 3"));
    EXPECT_THAT(status.message(), HasSubstr("kv head 1"));
    EXPECT_THAT(status.message(), HasSubstr("block 7"));
    EXPECT_THAT(status.message(), HasSubstr(*file));
    EXPECT_THAT(status.message(), HasSubstr("offset " + std::to_string(offset)));
    EXPECT_THAT(status.message(), HasSubstr("stored 0x"));
  }
  EXPECT_EQ((*pool)->stats().checksum_failures, 2);
  EXPECT_TRUE((*pool)->Read(6, out.data()).ok());  // its neighbour is intact

  // A file cut short under the pool: the read comes back short, not as garbage.
  std::filesystem::resize_file(*file, offset);
  absl::Status short_read = (*pool)->Read(7, out.data());
  EXPECT_EQ(short_read.code(), absl::StatusCode::kDataLoss) << short_read;
  EXPECT_THAT(short_read.message(), HasSubstr("short read"));
  EXPECT_THAT(short_read.message(), HasSubstr("layer 3, kv head 1, block 7"));
  EXPECT_THAT(short_read.message(), HasSubstr("offset " + std::to_string(offset)));
}

TEST(DiskPoolTest, BadSlotsAndOptions) {
  ScratchDir dir;
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(Options(dir.path(), 4096, 4));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<uint8_t> buf(4096, 1);
  EXPECT_EQ((*pool)->Read(2, buf.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT((*pool)->Read(2, buf.data()).message(), HasSubstr("slot 2 was never written"));
  EXPECT_EQ((*pool)->Read(4, buf.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*pool)->Read(-1, buf.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*pool)->Write(4, buf.data(), {}).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int64_t> out_of_range = {9};
  EXPECT_EQ((*pool)->Stream(out_of_range, 8192, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int64_t> twice = {1, 1};
  const std::vector<const void*> data = {buf.data(), buf.data()};
  const std::vector<BlockTag> tags(2);
  EXPECT_EQ((*pool)->WriteMany(twice, data, tags).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*pool)->WriteMany(twice, std::span(data).first(1), tags).code(),
            absl::StatusCode::kInvalidArgument);
  (*pool)->Forget(99);  // out of range: nothing happens

  DiskPoolOptions small = Options(dir.path(), 4096, 1);
  small.capacity_bytes = 4095;
  EXPECT_EQ(DiskPool::Create(small).status().code(), absl::StatusCode::kInvalidArgument);
  small.block_bytes = 0;
  EXPECT_EQ(DiskPool::Create(small).status().code(), absl::StatusCode::kInvalidArgument);

  ScratchDir huge_dir;
  DiskPoolOptions huge = Options(huge_dir.path(), 4096, 1);
  huge.capacity_bytes = int64_t{1} << 50;  // 1 PiB
  absl::Status status = DiskPool::Create(huge).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("bytes"));
  EXPECT_THAT(status.message(), HasSubstr(huge_dir.path()));
  EXPECT_TRUE(huge_dir.Files().empty());
}

// A pool whose I/O path falls back (buffered on tmpfs; pread when the ring
// cannot be set up) reads and streams the same bytes.
void CheckRoundTrip(DiskPool& pool, int64_t block) {
  RandomBlocks blocks(pool.slots(), block);
  SCOPED_TRACE(blocks.seed());
  WriteAll(pool, blocks);
  std::vector<int64_t> slots(pool.slots());
  for (int64_t i = 0; i < pool.slots(); ++i) slots[i] = pool.slots() - 1 - i;
  size_t seen = 0;
  absl::Status status =
      pool.Stream(slots, 4 * block, [&](size_t first, size_t n, const uint8_t* data) {
        for (size_t j = 0; j < n; ++j) {
          EXPECT_EQ(std::memcmp(data + j * block, blocks.block(slots[first + j]), block), 0);
        }
        seen += n;
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(seen, slots.size());
}

TEST(DiskPoolTest, BufferedIoWhenDirectIoIsOff) {
  // The path a filesystem refusing O_DIRECT takes.
  ScratchDir dir;
  DiskPoolOptions options = Options(dir.path(), 6000, 7);
  options.direct_io = false;
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_FALSE((*pool)->direct_io());
  CheckRoundTrip(**pool, 6000);
}

TEST(DiskPoolTest, PreadFallbackWithoutRing) {
  ScratchDir dir;
  DiskPoolOptions options = Options(dir.path(), 12288, 7);
  options.queue_depth = 1 << 20;  // above IORING_MAX_ENTRIES: io_uring_queue_init fails
  absl::StatusOr<std::unique_ptr<DiskPool>> pool = DiskPool::Create(options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  if ((*pool)->uring()) GTEST_SKIP() << "the kernel accepted the ring";
  CheckRoundTrip(**pool, 12288);
}

TEST(BlockFileTest, RoundTripAndCorruption) {
  const int64_t block = 6000, n = 5;
  ScratchDir dir;
  const std::string path = dir.path() + "/snap.bin";
  RandomBlocks blocks(n, block);
  SCOPED_TRACE(blocks.seed());
  {
    absl::StatusOr<BlockFileWriter> writer = BlockFileWriter::Create(path, block, n);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int64_t i = n - 1; i >= 0; --i) {
      ASSERT_TRUE(writer->Put(i, blocks.block(i), BlockTag{int32_t(i), 1, int32_t(10 + i)}).ok());
    }
    EXPECT_EQ(writer->Put(0, blocks.block(0), {}).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(writer->Put(n, blocks.block(0), {}).code(), absl::StatusCode::kInvalidArgument);
    BlockFileWriter moved = std::move(*writer);
    absl::Status finish = moved.Finish();
    ASSERT_TRUE(finish.ok()) << finish;
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  absl::StatusOr<BlockFileReader> reader = BlockFileReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ(reader->n_blocks(), n);
  EXPECT_EQ(reader->block_bytes(), block);
  std::vector<uint8_t> out(block);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(reader->tag(i).layer, i);
    EXPECT_EQ(reader->tag(i).block, 10 + i);
    ASSERT_TRUE(reader->Read(i, out.data()).ok());
    EXPECT_EQ(std::memcmp(out.data(), blocks.block(i), block), 0);
  }
  EXPECT_EQ(reader->Read(n, out.data()).code(), absl::StatusCode::kInvalidArgument);

  // Block index 2 lives at 4096 (header and index) + 2 * 8192.
  const int64_t offset = 4096 + 2 * 8192;
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint8_t byte = blocks.block(2)[5999] ^ 1;
  ASSERT_EQ(pwrite(fd, &byte, 1, offset + 5999), 1);
  close(fd);
  absl::Status status = reader->Read(2, out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("block index 2"));
  EXPECT_THAT(status.message(), HasSubstr("layer 2, kv head 1, block 12"));
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("offset " + std::to_string(offset)));
  EXPECT_TRUE(reader->Read(3, out.data()).ok());

  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
  status = BlockFileReader::Open(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("truncated"));
  std::filesystem::resize_file(path, 10);
  EXPECT_EQ(BlockFileReader::Open(path).status().code(), absl::StatusCode::kDataLoss);

  fd = open(path.c_str(), O_RDWR | O_TRUNC);
  ASSERT_GE(fd, 0);
  std::string junk(4096, 'x');
  ASSERT_EQ(write(fd, junk.data(), junk.size()), ssize_t(junk.size()));
  close(fd);
  status = BlockFileReader::Open(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("magic"));

  status = BlockFileReader::Open(dir.path() + "/missing.bin").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("missing.bin"));
}

TEST(BlockFileTest, UnfinishedWriterLeavesNothing) {
  ScratchDir dir;
  const std::string path = dir.path() + "/snap.bin";
  {
    absl::StatusOr<BlockFileWriter> writer = BlockFileWriter::Create(path, 4096, 2);
    ASSERT_TRUE(writer.ok()) << writer.status();
    std::vector<uint8_t> data(4096, 3);
    ASSERT_TRUE(writer->Put(1, data.data(), {}).ok());
    absl::Status status = writer->Finish();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(status.message(), HasSubstr("block index 0"));
  }
  EXPECT_TRUE(dir.Files().empty());
  EXPECT_EQ(BlockFileWriter::Create(path, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DiskPoolTest, MeasureSequentialRead) {
  ScratchDir dir;
  absl::StatusOr<double> gbps = MeasureSequentialReadGbps(dir.path(), int64_t{64} << 20);
  ASSERT_TRUE(gbps.ok()) << gbps.status();
  EXPECT_GT(*gbps, 0);
  EXPECT_TRUE(dir.Files().empty());
  EXPECT_EQ(MeasureSequentialReadGbps(dir.path(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace headwise::kv
