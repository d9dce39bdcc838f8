// Tests of the GGUF reader: round trips of every metadata type through the
// in-test writer, layout and alignment, one test per class of malformed input
// (each checks the message names the problem), every truncation of a valid
// image, and the real SmolLM2 file when it has been fetched.
#include "runtime/model/gguf.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quant.h"
#include "runtime/model/gguf_test_writer.h"

namespace headwise::model {
namespace {

using ::testing::HasSubstr;
using namespace ::headwise::model::testing;  // NOLINT: writer helpers

absl::StatusOr<std::unique_ptr<GgufFile>> Parse(const std::vector<uint8_t>& image) {
  return GgufFile::FromBuffer(image.data(), image.size(), "test.gguf");
}

// Parses and expects InvalidArgument with `substr` in the message.
void ExpectInvalid(const std::vector<uint8_t>& image, const std::string& substr) {
  auto f = Parse(image);
  ASSERT_FALSE(f.ok()) << "expected an error containing: " << substr;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(substr));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("test.gguf"));
  EXPECT_EQ(std::string(f.status().message()).find('\n'), std::string::npos);
}

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

GgufTestWriter ValidWriter() {
  GgufTestWriter w;
  w.Add("general.architecture", Str("llama"))
      .Add("llama.block_count", U32(2))
      .Add("tokenizer.ggml.tokens", StrArray({"<s>", "a", "bc"}))
      .Add("llama.rope.freq_base", F32(10000.0f));
  w.AddTensor("token_embd.weight", {4, 3}, 0, F32Bytes({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  w.AddTensor("blk.0.attn_q.weight", {32, 2}, 8, {});  // q8_0
  w.AddTensor("output_norm.weight", {4}, 0, F32Bytes({1.5f, -2, 3, 4}));
  return w;
}

TEST(GgufTest, RoundTripsEveryValueType) {
  GgufTestWriter w;
  w.version = 2;
  w.Add("u8", U8(250))
      .Add("i8", I8(-7))
      .Add("u16", U16(65535))
      .Add("i16", I16(-32768))
      .Add("u32", U32(4000000000u))
      .Add("i32", I32(-2000000000))
      .Add("f32", F32(0.1f))
      .Add("bool_t", Bool(true))
      .Add("bool_f", Bool(false))
      .Add("str", Str("héllo"))
      .Add("empty_str", Str(""))
      .Add("u64", U64(std::numeric_limits<uint64_t>::max()))
      .Add("i64", I64(std::numeric_limits<int64_t>::min()))
      .Add("f64", F64(-2.5e300))
      .Add("arr_u32", Array(GgufValueType::kUint32, {U32(1), U32(2), U32(3)}))
      .Add("arr_str", StrArray({"a", "", "ccc"}))
      .Add("arr_empty", Array(GgufValueType::kFloat32, {}))
      .Add("arr_nested",
           Array(GgufValueType::kArray, {Array(GgufValueType::kInt16, {I16(-1)}),
                                         Array(GgufValueType::kInt16, {}), StrArray({"x"})}));
  const auto image = w.Build();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.metadata().size(), 18u);
  EXPECT_TRUE(g.tensors().empty());

  EXPECT_EQ(g.Find("u8")->type, GgufValueType::kUint8);
  EXPECT_EQ(*g.GetInt("u8"), 250);
  EXPECT_EQ(g.Find("i8")->type, GgufValueType::kInt8);
  EXPECT_EQ(*g.GetInt("i8"), -7);
  EXPECT_EQ(*g.GetInt("u16"), 65535);
  EXPECT_EQ(*g.GetInt("i16"), -32768);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000);
  EXPECT_EQ(*g.GetInt("i32"), -2000000000);
  EXPECT_EQ(g.Find("f32")->type, GgufValueType::kFloat32);
  EXPECT_EQ(*g.GetFloat("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(*g.GetFloat("u32"), 4e9);  // any numeric type reads as a float
  EXPECT_EQ(*g.GetInt("bool_t"), 1);
  EXPECT_EQ(std::get<bool>(g.Find("bool_f")->value), false);
  EXPECT_EQ(*g.GetString("str"), "héllo");
  EXPECT_EQ(*g.GetString("empty_str"), "");
  EXPECT_EQ(std::get<uint64_t>(g.Find("u64")->value), std::numeric_limits<uint64_t>::max());
  EXPECT_FALSE(g.Find("u64")->AsInt().has_value());
  EXPECT_THAT(std::string(g.GetInt("u64").status().message()), HasSubstr("does not fit int64"));
  EXPECT_EQ(*g.GetInt("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*g.GetFloat("f64"), -2.5e300);

  auto arr = g.GetArray("arr_u32");
  ASSERT_TRUE(arr.ok());
  EXPECT_EQ((*arr)->element_type, GgufValueType::kUint32);
  ASSERT_EQ((*arr)->values.size(), 3u);
  EXPECT_EQ((*arr)->values[2].AsInt(), 3);

  auto strs = g.GetArray("arr_str");
  ASSERT_TRUE(strs.ok());
  ASSERT_EQ((*strs)->values.size(), 3u);
  EXPECT_EQ(*(*strs)->values[0].AsString(), "a");
  EXPECT_EQ(*(*strs)->values[1].AsString(), "");
  EXPECT_EQ(*(*strs)->values[2].AsString(), "ccc");

  EXPECT_TRUE((*g.GetArray("arr_empty"))->values.empty());
  EXPECT_EQ((*g.GetArray("arr_empty"))->element_type, GgufValueType::kFloat32);

  const GgufArray* nested = *g.GetArray("arr_nested");
  ASSERT_EQ(nested->values.size(), 3u);
  EXPECT_EQ(nested->element_type, GgufValueType::kArray);
  ASSERT_NE(nested->values[0].AsArray(), nullptr);
  EXPECT_EQ(nested->values[0].AsArray()->values[0].AsInt(), -1);
  EXPECT_TRUE(nested->values[1].AsArray()->values.empty());
  EXPECT_EQ(*nested->values[2].AsArray()->values[0].AsString(), "x");
}

TEST(GgufTest, TypedGettersNameKeyAndType) {
  const auto image = ValidWriter().Build();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.GetInt("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(g.GetInt("nope").status().message()), HasSubstr("'nope'"));
  auto bad = g.GetInt("general.architecture");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("'general.architecture' is string, expected an integer"));
  EXPECT_THAT(std::string(g.GetString("llama.block_count").status().message()),
              HasSubstr("'llama.block_count' is uint32, expected a string"));
  EXPECT_THAT(std::string(g.GetFloat("tokenizer.ggml.tokens").status().message()),
              HasSubstr("is array, expected a number"));
  EXPECT_THAT(std::string(g.GetArray("llama.rope.freq_base").status().message()),
              HasSubstr("is float32, expected an array"));
  EXPECT_EQ(g.Find("missing"), nullptr);
  EXPECT_EQ(g.FindTensor("missing"), nullptr);
  EXPECT_EQ(GgufValueTypeName(GgufValueType::kFloat64), "float64");
}

TEST(GgufTest, TensorDirectoryAndDefaultAlignment) {
  const auto image = ValidWriter().Build();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  EXPECT_EQ(g.file_size(), image.size());
  ASSERT_EQ(g.tensors().size(), 3u);

  const TensorInfo* embd = g.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<uint64_t>{4, 3}));
  EXPECT_EQ(embd->type, kernels::GgmlType::kF32);
  EXPECT_EQ(embd->n_elements, 12u);
  EXPECT_EQ(embd->n_bytes, 48u);
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(embd->data, image.data() + g.data_offset());
  float v[12];
  std::memcpy(v, embd->data, sizeof(v));
  EXPECT_EQ(v[11], 11.0f);

  const TensorInfo* q = g.FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, kernels::GgmlType::kQ8_0);
  EXPECT_EQ(q->n_bytes, 68u);
  EXPECT_EQ(q->offset, 64u);  // 48 rounded up to 32

  const TensorInfo* norm = g.FindTensor("output_norm.weight");
  EXPECT_EQ(norm->offset, 160u);
  EXPECT_EQ(norm->data + norm->n_bytes, image.data() + image.size());
  float n[4];
  std::memcpy(n, norm->data, sizeof(n));
  EXPECT_EQ(n[1], -2.0f);
}

TEST(GgufTest, CustomAlignment) {
  GgufTestWriter w = ValidWriter();
  w.SetAlignment(256);
  const auto image = w.Build();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 256u);
  EXPECT_EQ((*f)->data_offset() % 256, 0u);
  for (const TensorInfo& t : (*f)->tensors()) EXPECT_EQ(t.offset % 256, 0u) << t.name;
  EXPECT_EQ((*f)->FindTensor("output_norm.weight")->offset, 512u);
}

TEST(GgufTest, AlignmentMustBeANonZeroPowerOfTwo) {
  for (uint32_t a : {0u, 3u, 48u}) {
    GgufTestWriter w = ValidWriter();
    w.Add("general.alignment", U32(a));
    ExpectInvalid(w.Build(),
                  "general.alignment must be a non-zero power of two, got " + std::to_string(a));
  }
  GgufTestWriter w = ValidWriter();
  w.Add("general.alignment", Str("32"));
  ExpectInvalid(w.Build(), "general.alignment must be a non-zero power of two, got string");
}

TEST(GgufTest, EveryTruncationFailsCleanly) {
  GgufTestWriter w = ValidWriter();
  w.Add("nested", Array(GgufValueType::kArray, {StrArray({"p", "qq"}), StrArray({})}))
      .Add("flag", Bool(true))
      .Add("big", U64(1));
  const auto image = w.Build();
  ASSERT_TRUE(Parse(image).ok());
  for (size_t len = 0; len < image.size(); ++len) {
    // A fresh, exactly sized copy so a sanitizer build catches any over-read.
    const std::vector<uint8_t> prefix(image.begin(), image.begin() + len);
    auto f = GgufFile::FromBuffer(len ? prefix.data() : nullptr, len, "test.gguf");
    ASSERT_FALSE(f.ok()) << "a " << len << "-byte prefix parsed";
    ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  }
  // A few truncation points name what was cut.
  auto at = [&](size_t len) {
    const std::vector<uint8_t> prefix(image.begin(), image.begin() + len);
    return std::string(GgufFile::FromBuffer(prefix.data(), len, "t").status().message());
  };
  EXPECT_THAT(at(6), HasSubstr("file ends while reading the GGUF version"));
  EXPECT_THAT(at(12), HasSubstr("file ends while reading the tensor count"));
  EXPECT_THAT(at(image.size() - 1), HasSubstr("ends past end of file"));
}

TEST(GgufTest, WrongMagic) {
  auto image = ValidWriter().Build();
  std::memcpy(image.data(), "GGML", 4);
  ExpectInvalid(image, "not a GGUF file (magic is \"GGML\", expected \"GGUF\"");
  image[0] = 0;
  ExpectInvalid(image, "magic is \"\\x00GML\"");
  ExpectInvalid({}, "not a GGUF file");
}

TEST(GgufTest, Versions) {
  GgufTestWriter w = ValidWriter();
  w.version = 1;
  ExpectInvalid(w.Build(), "at byte 4: GGUF version 1 is not supported");
  w.version = 4;
  ExpectInvalid(w.Build(), "unsupported GGUF version 4 (supported: 2 and 3)");
  w.version = 0x03000000;
  ExpectInvalid(w.Build(), "big-endian");
  w.version = 2;
  EXPECT_TRUE(Parse(w.Build()).ok());
}

TEST(GgufTest, TensorPastEndOfFile) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("late", {8}, 0, {}, 4096);
  const auto image = w.Build();
  ExpectInvalid(image,
                "tensor 'late' data [offset 4096, 32 bytes] ends past end of file (file is " +
                    std::to_string(image.size()) + " bytes)");
}

TEST(GgufTest, AbsurdKvCount) {
  GgufTestWriter w = ValidWriter();
  w.n_kv_override = std::numeric_limits<uint64_t>::max();
  const auto image = w.Build();
  ExpectInvalid(image, "at byte 16: n_kv = 18446744073709551615 is impossible for a " +
                           std::to_string(image.size()) + "-byte file");
  w.n_kv_override = 100;  // plausible-looking but more than the file holds
  ExpectInvalid(w.Build(), "n_kv = 100 is impossible");
}

TEST(GgufTest, AbsurdTensorCount) {
  GgufTestWriter w = ValidWriter();
  w.n_tensors_override = uint64_t{1} << 61;  // * sizeof(TensorInfo) would overflow
  ExpectInvalid(w.Build(), "at byte 8: n_tensors = 2305843009213693952 is impossible");
  w.n_tensors_override = 4;  // one more than written: the directory runs into the data
  EXPECT_FALSE(Parse(w.Build()).ok());
}

TEST(GgufTest, HugeStringLength) {
  auto image = ValidWriter().Build();
  const size_t key = FindBytes(image, "general.architecture");
  ASSERT_NE(key, std::string::npos);
  PatchU64(image, key - 8, std::numeric_limits<uint64_t>::max() - 3);
  ExpectInvalid(image, "at byte 24: metadata key #0 has length 18446744073709551612 but only");

  image = ValidWriter().Build();
  const size_t value = FindBytes(image, "llama") - 8;  // the value string's length field
  PatchU64(image, value, uint64_t{1} << 40);
  ExpectInvalid(image, "string 'general.architecture' has length 1099511627776");
}

TEST(GgufTest, HugeArrayLength) {
  auto image = ValidWriter().Build();
  const size_t key = FindBytes(image, "tokenizer.ggml.tokens");
  // key, then type (4), element type (4), count (8).
  PatchU64(image, key + std::strlen("tokenizer.ggml.tokens") + 8, uint64_t{1} << 60);
  ExpectInvalid(image, "array 'tokenizer.ggml.tokens' has 1152921504606846976 elements");
}

// Regression: counts were checked only against the bytes left, but a uint8
// element takes 48 bytes in memory, so a 64 MiB file with one array made the
// reader allocate 3.2 GB (and a larger one exhaust memory). Arrays now hold 2^24
// elements in all; this one has one more, in a 16 MiB image.
TEST(GgufTest, ArrayElementsAreCapped) {
  constexpr uint64_t kCount = (uint64_t{1} << 24) + 1;
  EncodedValue big{GgufValueType::kArray, {}};
  AppendLe<uint32_t>(big.bytes, static_cast<uint32_t>(GgufValueType::kUint8));
  AppendLe<uint64_t>(big.bytes, kCount);
  big.bytes.resize(big.bytes.size() + kCount, 1);
  GgufTestWriter w;
  w.Add("small", Array(GgufValueType::kUint8, {U8(1), U8(2)})).Add("big", big);
  ExpectInvalid(w.Build(),
                "array 'big' has 16777217 elements, more than the 16777214 left of the 16777216");
}

TEST(GgufTest, DimensionProductOverflows) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("huge", {uint64_t{1} << 32, uint64_t{1} << 32}, 0);
  ExpectInvalid(w.Build(), "tensor 'huge': element count overflows at dimension 1");
  GgufTestWriter w2 = ValidWriter();
  w2.AddTensor("neg", {std::numeric_limits<uint64_t>::max()}, 0);
  ExpectInvalid(w2.Build(), "tensor 'neg' has dimension 0 = 18446744073709551615");
}

TEST(GgufTest, SizeAfterPaddingOverflows) {
  // The offset is aligned, but offset + size wraps around 2^64.
  GgufTestWriter w = ValidWriter();
  w.AddTensor("wrap", {8}, 0, {}, std::numeric_limits<uint64_t>::max() - 31);
  ExpectInvalid(w.Build(), "tensor 'wrap' data [offset 18446744073709551584, 32 bytes] ends past");
  // A huge alignment pads the header past the end of the file.
  GgufTestWriter w2;
  w2.Add("general.alignment", U64(uint64_t{1} << 62));
  w2.AddTensor("first", {8}, 0, {}, 0);
  ExpectInvalid(w2.Build(), "the data section (the ");
  // 2^63 does not fit the signed alignment at all.
  GgufTestWriter w3 = ValidWriter();
  w3.Add("general.alignment", U64(uint64_t{1} << 63));
  ExpectInvalid(w3.Build(), "general.alignment must be a non-zero power of two, got uint64");
}

TEST(GgufTest, OffsetNotAligned) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("odd", {8}, 0, {}, 36);
  ExpectInvalid(w.Build(), "tensor 'odd' data offset 36 is not a multiple of the alignment 32");
}

TEST(GgufTest, UnknownTensorType) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("old_q4_2", {32}, 4);
  ExpectInvalid(w.Build(), "tensor 'old_q4_2' has unknown tensor type 4");
}

TEST(GgufTest, RowNotAWholeNumberOfBlocks) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("ragged", {33, 2}, 3);
  ExpectInvalid(w.Build(),
                "tensor 'ragged' has row length 33, not a multiple of the q4_1 block "
                "size 32");
}

// Regression (fuzz/corpus/gguf/cve_n_bytes_overflow.gguf): a row whose byte
// size overflows 64 bits was reported as "not a multiple of the block size 1".
TEST(GgufTest, RowByteSizeOverflows) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("wide", {uint64_t{1} << 62}, 0);  // f32: 2^64 bytes
  ExpectInvalid(w.Build(),
                "tensor 'wide': the byte size of a row of 4611686018427387904 f32 "
                "elements overflows");
  GgufTestWriter w2 = ValidWriter();
  w2.AddTensor("rows", {2, uint64_t{1} << 61}, 0);  // 8-byte rows, 2^64 bytes in all
  ExpectInvalid(w2.Build(), "tensor 'rows': byte size overflows");
}

TEST(GgufTest, BadDimensionCounts) {
  GgufTestWriter w = ValidWriter();
  w.AddTensor("five", {1, 1, 1, 1, 1}, 0);
  ExpectInvalid(w.Build(), "tensor 'five' has 5 dimensions (must be 1 to 4)");
  GgufTestWriter w0 = ValidWriter();
  w0.AddTensor("zero_dims", {}, 0);
  ExpectInvalid(w0.Build(), "tensor 'zero_dims' has 0 dimensions");
  GgufTestWriter wz = ValidWriter();
  wz.AddTensor("empty", {4, 0}, 0);
  ExpectInvalid(wz.Build(), "tensor 'empty' has dimension 1 = 0");
}

TEST(GgufTest, DuplicateNames) {
  GgufTestWriter w = ValidWriter();
  w.Add("llama.block_count", U32(3));
  ExpectInvalid(w.Build(), "duplicate metadata key 'llama.block_count'");
  GgufTestWriter w2 = ValidWriter();
  w2.AddTensor("output_norm.weight", {4}, 0);
  ExpectInvalid(w2.Build(), "duplicate tensor name 'output_norm.weight'");
}

TEST(GgufTest, BadValues) {
  GgufTestWriter w;
  w.Add("flag", EncodedValue{GgufValueType::kBool, {2}});
  ExpectInvalid(w.Build(), "bool 'flag' is 2, not 0 or 1");
  GgufTestWriter w2;
  w2.Add("mystery", EncodedValue{static_cast<GgufValueType>(13), {0, 0, 0, 0}});
  ExpectInvalid(w2.Build(), "metadata 'mystery' has unknown value type 13");
  GgufTestWriter w3;
  EncodedValue bad_array{GgufValueType::kArray, {}};
  AppendLe<uint32_t>(bad_array.bytes, 99);
  AppendLe<uint64_t>(bad_array.bytes, 0);
  w3.Add("arr", bad_array);
  ExpectInvalid(w3.Build(), "array 'arr' has unknown element type 99");
  // Nesting far deeper than any real file: an error, not a stack overflow.
  EncodedValue deep = Array(GgufValueType::kUint8, {});
  for (int i = 0; i < 100; ++i) deep = Array(GgufValueType::kArray, {deep});
  GgufTestWriter w4;
  w4.Add("deep", deep);
  ExpectInvalid(w4.Build(), "'deep' nests arrays deeper than");
}

TEST(GgufTest, OpenMapsAFile) {
  const auto image = ValidWriter().Build();
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("headwise_gguf_test_" + std::to_string(getpid()) + ".gguf"))
                               .string();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(image.data()),
              static_cast<std::streamsize>(image.size()));
  }
  {
    auto f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->path(), path);
    EXPECT_EQ((*f)->file_size(), image.size());
    float n[4];
    std::memcpy(n, (*f)->FindTensor("output_norm.weight")->data, sizeof(n));
    EXPECT_EQ(n[0], 1.5f);
  }
  std::filesystem::remove(path);
}

TEST(GgufTest, OpenErrors) {
  auto missing = GgufFile::Open("/nonexistent/dir/model.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/dir/model.gguf"));
  auto dir = GgufFile::Open(std::filesystem::temp_directory_path().string());
  EXPECT_FALSE(dir.ok());
  const std::string empty =
      (std::filesystem::temp_directory_path() / ("headwise_empty_" + std::to_string(getpid())))
          .string();
  { std::ofstream out(empty); }
  auto e = GgufFile::Open(empty);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("not a GGUF file"));
  std::filesystem::remove(empty);
}

// ---- the real model ----

constexpr char kModelPath[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// The fetched model, looked up from the working directory and its parents
// (ctest runs in the source root; a build directory is one or two below).
std::string FindModel() {
  std::filesystem::path dir = std::filesystem::current_path();
  for (int i = 0; i < 4; ++i, dir = dir.parent_path()) {
    if (std::filesystem::exists(dir / kModelPath)) return (dir / kModelPath).string();
  }
  return "";
}

#define SKIP_WITHOUT_MODEL(path)        \
  const std::string path = FindModel(); \
  if (path.empty()) GTEST_SKIP() << kModelPath << " not found; run scripts/fetch-model"

TEST(GgufRealModelTest, SmolLM2Directory) {
  SKIP_WITHOUT_MODEL(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.file_size(), 98362432u);
  EXPECT_EQ(g.metadata().size(), 33u);
  EXPECT_EQ(g.tensors().size(), 272u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 30);
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 9);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*g.GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.tokens"))->values.size(), 49152u);
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.merges"))->values.size(), 48900u);
  EXPECT_EQ(g.data_offset(), 1785664u);

  int f32 = 0, q4_1 = 0, q8_0 = 0;
  uint64_t params = 0;
  for (const TensorInfo& t : g.tensors()) {
    params += t.n_elements;
    f32 += t.type == kernels::GgmlType::kF32;
    q4_1 += t.type == kernels::GgmlType::kQ4_1;
    q8_0 += t.type == kernels::GgmlType::kQ8_0;
  }
  EXPECT_EQ(f32, 61);
  EXPECT_EQ(q4_1, 210);
  EXPECT_EQ(q8_0, 1);
  EXPECT_EQ(params, 134515008u);
  const TensorInfo* embd = g.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<uint64_t>{576, 49152}));
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(g.FindTensor("blk.0.ffn_down.weight")->offset, 31868992u - 1785664u);
}

uint64_t Fnv1a(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  for (float f : v) {
    uint32_t w;
    std::memcpy(&w, &f, 4);
    h ^= w;
    h *= 1099511628211ull;
  }
  return h;
}

// Rows of the real tensors, dequantized, against gguf-py's
// `gguf.quants.dequantize` (FNV-1a 64 of the float bits, and a few values).
TEST(GgufRealModelTest, DequantizedRowsMatchGgufPy) {
  SKIP_WITHOUT_MODEL(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  struct Row {
    const char* tensor;
    uint64_t row;
    uint64_t fnv;
    float v0, v1, v100, vlast;
  };
  const Row kRows[] = {
      {"token_embd.weight", 0, 0xb603268e384e0a43ull, -0.10654449462890625f, 0.032978057861328125f,
       0.05316162109375f, 0.029754638671875f},
      {"token_embd.weight", 12345, 0x24cdbde4706c0fc3ull, 0.06287956237792969f,
       -0.05608177185058594f, -0.035430908203125f, -0.09714889526367188f},
      {"token_embd.weight", 49151, 0x42e4ab21d4b4eec3ull, 0.011505126953125f, 0.0057525634765625f,
       -0.026912689208984375f, -0.0417022705078125f},
      {"blk.0.attn_q.weight", 0, 0x5a5e4c2ebb701083ull, -0.0963134765625f, 0.1573486328125f,
       0.214111328125f, 0.12353515625f},
      {"blk.0.attn_q.weight", 575, 0xd14d7411138b8083ull, -0.15679931640625f, 0.154327392578125f,
       0.1810302734375f, -0.255859375f},
      {"blk.29.ffn_down.weight", 7, 0xd1972d22e01a8383ull, 0.30670166015625f, 0.04339599609375f,
       0.021484375f, -0.0621337890625f},
  };
  for (const Row& r : kRows) {
    SCOPED_TRACE(std::string(r.tensor) + " row " + std::to_string(r.row));
    const TensorInfo* t = (*f)->FindTensor(r.tensor);
    ASSERT_NE(t, nullptr);
    const uint64_t n = t->dims[0];
    const uint64_t row_bytes = *kernels::RowBytes(t->type, n);
    std::vector<float> out(n);
    ASSERT_TRUE(kernels::DequantizeRow(t->type, t->data + r.row * row_bytes, out.data(),
                                       static_cast<int64_t>(n)));
    EXPECT_EQ(out[0], r.v0);
    EXPECT_EQ(out[1], r.v1);
    EXPECT_EQ(out[100], r.v100);
    EXPECT_EQ(out.back(), r.vlast);
    EXPECT_EQ(Fnv1a(out), r.fnv);
  }
}

}  // namespace
}  // namespace headwise::model
