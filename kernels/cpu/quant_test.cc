// Tests of the GGML type table and row dequantization (kernels/quant.h).
// Each quant type is checked twice: against hand-packed blocks whose values
// are known exactly (the packing here is written from the block layout, not
// from the dequantizer), and against values produced by llama.cpp's gguf-py
// (`gguf.quants.dequantize`) for a fixed byte pattern, compared bit for bit.
#include "kernels/quant.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::kernels {
namespace {

using ::testing::ElementsAre;

struct Expected {
  GgmlType type;
  const char* name;
  uint32_t block_size;
  uint32_t type_size;
};

TEST(TypeTraitsTest, MatchesGgmlForEveryType) {
  const Expected kAll[] = {
      {GgmlType::kF32, "f32", 1, 4},
      {GgmlType::kF16, "f16", 1, 2},
      {GgmlType::kQ4_0, "q4_0", 32, 18},
      {GgmlType::kQ4_1, "q4_1", 32, 20},
      {GgmlType::kQ5_0, "q5_0", 32, 22},
      {GgmlType::kQ5_1, "q5_1", 32, 24},
      {GgmlType::kQ8_0, "q8_0", 32, 34},
      {GgmlType::kQ8_1, "q8_1", 32, 36},
      {GgmlType::kQ2_K, "q2_K", 256, 84},
      {GgmlType::kQ3_K, "q3_K", 256, 110},
      {GgmlType::kQ4_K, "q4_K", 256, 144},
      {GgmlType::kQ5_K, "q5_K", 256, 176},
      {GgmlType::kQ6_K, "q6_K", 256, 210},
      {GgmlType::kQ8_K, "q8_K", 256, 292},
      {GgmlType::kIQ2_XXS, "iq2_xxs", 256, 66},
      {GgmlType::kIQ2_XS, "iq2_xs", 256, 74},
      {GgmlType::kIQ3_XXS, "iq3_xxs", 256, 98},
      {GgmlType::kIQ1_S, "iq1_s", 256, 50},
      {GgmlType::kIQ4_NL, "iq4_nl", 32, 18},
      {GgmlType::kIQ3_S, "iq3_s", 256, 110},
      {GgmlType::kIQ2_S, "iq2_s", 256, 82},
      {GgmlType::kIQ4_XS, "iq4_xs", 256, 136},
      {GgmlType::kI8, "i8", 1, 1},
      {GgmlType::kI16, "i16", 1, 2},
      {GgmlType::kI32, "i32", 1, 4},
      {GgmlType::kI64, "i64", 1, 8},
      {GgmlType::kF64, "f64", 1, 8},
      {GgmlType::kIQ1_M, "iq1_m", 256, 56},
      {GgmlType::kBF16, "bf16", 1, 2},
      {GgmlType::kTQ1_0, "tq1_0", 256, 54},
      {GgmlType::kTQ2_0, "tq2_0", 256, 66},
      {GgmlType::kMXFP4, "mxfp4", 32, 17},
  };
  for (const Expected& e : kAll) {
    const auto t = TypeTraits(static_cast<uint32_t>(e.type));
    ASSERT_TRUE(t.has_value()) << e.name;
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block_size) << e.name;
    EXPECT_EQ(t->type_size, e.type_size) << e.name;
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xffffffffu}) {
    EXPECT_FALSE(TypeTraits(removed).has_value()) << removed;
  }
}

TEST(TypeTraitsTest, CanDequantizeAgreesWithDequantizeRow) {
  std::vector<uint8_t> zeros(292 * 2, 0);
  std::vector<float> out(512);
  for (uint32_t v = 0; v < 64; ++v) {
    const auto t = TypeTraits(v);
    if (!t) continue;
    const int64_t n = t->block_size * 2;
    EXPECT_EQ(DequantizeRow(static_cast<GgmlType>(v), zeros.data(), out.data(), n),
              t->can_dequantize)
        << t->name;
  }
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                     GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    EXPECT_TRUE(TypeTraits(static_cast<uint32_t>(t))->can_dequantize);
  }
}

TEST(RowBytesTest, BlocksTimesTypeSize) {
  EXPECT_EQ(RowBytes(GgmlType::kQ4_1, 576), 18u * 20u);
  EXPECT_EQ(RowBytes(GgmlType::kQ8_0, 576), 18u * 34u);
  EXPECT_EQ(RowBytes(GgmlType::kF32, 7), 28u);
  EXPECT_EQ(RowBytes(GgmlType::kQ6_K, 512), 420u);
  EXPECT_EQ(RowBytes(GgmlType::kQ4_K, 0), 0u);
  EXPECT_FALSE(RowBytes(GgmlType::kQ4_1, 33).has_value());
  EXPECT_FALSE(RowBytes(GgmlType::kQ4_K, 128).has_value());
  EXPECT_FALSE(RowBytes(static_cast<GgmlType>(4), 32).has_value());
  EXPECT_FALSE(RowBytes(GgmlType::kF64, uint64_t{1} << 62).has_value());  // 2^65 bytes
}

TEST(DequantizeRowTest, RejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> zeros(1024, 0);
  std::vector<float> out(512);
  EXPECT_FALSE(DequantizeRow(GgmlType::kQ4_1, zeros.data(), out.data(), 31));
  EXPECT_FALSE(DequantizeRow(GgmlType::kQ6_K, zeros.data(), out.data(), 32));
  EXPECT_FALSE(DequantizeRow(GgmlType::kQ2_K, zeros.data(), out.data(), 256));
  EXPECT_FALSE(DequantizeRow(static_cast<GgmlType>(5), zeros.data(), out.data(), 32));
  EXPECT_FALSE(DequantizeRow(GgmlType::kF32, zeros.data(), out.data(), -1));
}

// ---- plain types ----

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v, size_t misalign = 0) {
  std::vector<uint8_t> b(misalign + v.size() * sizeof(T));
  std::memcpy(b.data() + misalign, v.data(), v.size() * sizeof(T));
  return b;
}

TEST(DequantizeRowTest, F32CopiesFromUnalignedSource) {
  const std::vector<float> in = {1.5f, -0.0f, 3e38f, -1e-40f, 7.0f};
  const auto b = Bytes(in, 1);
  std::vector<float> out(in.size());
  ASSERT_TRUE(DequantizeRow(GgmlType::kF32, b.data() + 1, out.data(), 5));
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(std::memcmp(&out[i], &in[i], 4), 0) << i;
  }
}

TEST(DequantizeRowTest, F16SpecialValues) {
  const std::vector<uint16_t> in = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF,
                                    0x7C00, 0xFC00, 0x8000, 0x3555, 0x7E00};
  const auto b = Bytes(in, 3);
  std::vector<float> out(in.size());
  ASSERT_TRUE(DequantizeRow(GgmlType::kF16, b.data() + 3, out.data(), in.size()));
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(out[3], std::ldexp(1023.0f, -24));
  EXPECT_EQ(out[4], std::ldexp(1.0f, -14));
  EXPECT_EQ(out[5], 65504.0f);
  EXPECT_EQ(out[6], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[7], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[8], 0.0f);
  EXPECT_TRUE(std::signbit(out[8]));
  EXPECT_EQ(out[9], 0.33325195f);
  EXPECT_TRUE(std::isnan(out[10]));
}

// Every finite half against its value computed as sign * mantissa * 2^exp.
TEST(DequantizeRowTest, F16EveryFiniteValue) {
  std::vector<uint16_t> in;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) != 0x1f) in.push_back(static_cast<uint16_t>(h));
  }
  std::vector<float> out(in.size());
  ASSERT_TRUE(DequantizeRow(GgmlType::kF16, in.data(), out.data(), in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    const int exp = (in[i] >> 10) & 0x1f;
    const int mant = in[i] & 0x3ff;
    const double mag = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
    const float expected = static_cast<float>((in[i] & 0x8000) ? -mag : mag);
    ASSERT_EQ(out[i], expected) << std::hex << in[i];
    ASSERT_EQ(std::signbit(out[i]), (in[i] & 0x8000) != 0);
  }
}

TEST(DequantizeRowTest, BF16IsTheHighHalfOfAFloat) {
  const std::vector<uint16_t> in = {0x3F80, 0xC040, 0x7F80, 0x0001, 0x4049};
  const auto b = Bytes(in, 1);
  std::vector<float> out(in.size());
  ASSERT_TRUE(DequantizeRow(GgmlType::kBF16, b.data() + 1, out.data(), in.size()));
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[3], std::ldexp(1.0f, -133));
  EXPECT_EQ(out[4], 3.140625f);
}

TEST(DequantizeRowTest, IntegerAndF64Types) {
  std::vector<float> out(3);
  const auto i8 = Bytes(std::vector<int8_t>{-128, 0, 127});
  ASSERT_TRUE(DequantizeRow(GgmlType::kI8, i8.data(), out.data(), 3));
  EXPECT_THAT(out, ElementsAre(-128.0f, 0.0f, 127.0f));
  const auto i16 = Bytes(std::vector<int16_t>{-32768, 5, 32767}, 1);
  ASSERT_TRUE(DequantizeRow(GgmlType::kI16, i16.data() + 1, out.data(), 3));
  EXPECT_THAT(out, ElementsAre(-32768.0f, 5.0f, 32767.0f));
  const auto i32 = Bytes(std::vector<int32_t>{-7, 1 << 24, 3}, 2);
  ASSERT_TRUE(DequantizeRow(GgmlType::kI32, i32.data() + 2, out.data(), 3));
  EXPECT_THAT(out, ElementsAre(-7.0f, 16777216.0f, 3.0f));
  const auto f64 = Bytes(std::vector<double>{0.25, -1e300, 1.0 / 3}, 3);
  ASSERT_TRUE(DequantizeRow(GgmlType::kF64, f64.data() + 3, out.data(), 3));
  EXPECT_THAT(out, ElementsAre(0.25f, -std::numeric_limits<float>::infinity(), 1.0f / 3));
}

// ---- hand-packed quant blocks (values exactly representable) ----

void PutU16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v & 0xff);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
}

constexpr uint16_t kHalfOne = 0x3C00, kHalfTwo = 0x4000, kHalfHalf = 0x3800, kHalfQuarter = 0x3400,
                   kHalfMinusOne = 0xBC00;

TEST(DequantizeRowTest, Q8_0) {
  std::vector<uint8_t> b(2 * 34);
  PutU16(b, 0, kHalfHalf);
  PutU16(b, 34, kHalfTwo);
  for (int j = 0; j < 32; ++j) {
    b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
    b[36 + j] = static_cast<uint8_t>(static_cast<int8_t>(j == 0 ? -128 : 127 - j));
  }
  std::vector<float> out(64);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ8_0, b.data(), out.data(), 64));
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(out[j], (j - 16) * 0.5f) << j;
    EXPECT_EQ(out[32 + j], (j == 0 ? -128 : 127 - j) * 2.0f) << j;
  }
}

// Element j of a 32-block lives in byte j % 16, low nibble for j < 16.
uint8_t NibbleOf(int j) { return static_cast<uint8_t>((j * 7 + 3) & 0x0f); }

void PackNibbles(std::vector<uint8_t>& b, size_t at) {
  for (int j = 0; j < 16; ++j) {
    b[at + j] = static_cast<uint8_t>(NibbleOf(j) | (NibbleOf(j + 16) << 4));
  }
}

TEST(DequantizeRowTest, Q4_0) {
  std::vector<uint8_t> b(18);
  PutU16(b, 0, kHalfTwo);
  PackNibbles(b, 2);
  std::vector<float> out(32);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ4_0, b.data(), out.data(), 32));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], (NibbleOf(j) - 8) * 2.0f) << j;
}

TEST(DequantizeRowTest, Q4_1) {
  std::vector<uint8_t> b(20);
  PutU16(b, 0, kHalfQuarter);
  PutU16(b, 2, kHalfMinusOne);
  PackNibbles(b, 4);
  std::vector<float> out(32);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ4_1, b.data(), out.data(), 32));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], NibbleOf(j) * 0.25f - 1.0f) << j;
}

// The fifth bit of element j is bit j of the little-endian qh word.
constexpr uint32_t kQh = 0xA5C3F00Fu;

int FiveBit(int j) { return NibbleOf(j) | static_cast<int>(((kQh >> j) & 1u) << 4); }

TEST(DequantizeRowTest, Q5_0) {
  std::vector<uint8_t> b(22);
  PutU16(b, 0, kHalfOne);
  for (int k = 0; k < 4; ++k) b[2 + k] = static_cast<uint8_t>(kQh >> (8 * k));
  PackNibbles(b, 6);
  std::vector<float> out(32);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ5_0, b.data(), out.data(), 32));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], static_cast<float>(FiveBit(j) - 16)) << j;
}

TEST(DequantizeRowTest, Q5_1) {
  std::vector<uint8_t> b(24);
  PutU16(b, 0, kHalfHalf);
  PutU16(b, 2, kHalfTwo);
  for (int k = 0; k < 4; ++k) b[4 + k] = static_cast<uint8_t>(kQh >> (8 * k));
  PackNibbles(b, 8);
  std::vector<float> out(32);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ5_1, b.data(), out.data(), 32));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], FiveBit(j) * 0.5f + 2.0f) << j;
}

// K-quant super-blocks: 8 sub-blocks of 32 with 6-bit scales and mins, packed
// into 12 bytes: sub-blocks 0..3 in the low 6 bits of bytes 0..3 (scale) and
// 4..7 (min); sub-blocks 4..7 split into a nibble in bytes 8..11 (scale low,
// min high) and their top two bits in the top bits of bytes 0..3 / 4..7.
struct SubBlockScales {
  uint8_t scale[8];
  uint8_t min[8];
};

constexpr SubBlockScales kScales = {{1, 63, 17, 32, 5, 48, 31, 60}, {0, 7, 40, 63, 33, 2, 16, 59}};

void PackScalesK4(std::vector<uint8_t>& b, size_t at) {
  for (int s = 0; s < 4; ++s) {
    b[at + s] = kScales.scale[s] & 63;
    b[at + 4 + s] = kScales.min[s] & 63;
  }
  for (int s = 4; s < 8; ++s) {
    b[at + s + 4] =
        static_cast<uint8_t>((kScales.scale[s] & 0x0f) | ((kScales.min[s] & 0x0f) << 4));
    b[at + s - 4] |= static_cast<uint8_t>((kScales.scale[s] >> 4) << 6);
    b[at + s] |= static_cast<uint8_t>((kScales.min[s] >> 4) << 6);
  }
}

// The 4-bit quant of element e of a K super-block.
uint8_t K4(int e) { return static_cast<uint8_t>((e * 11 + 5) & 0x0f); }

// Quants of sub-blocks 2p and 2p+1 share bytes 32p..32p+31 (low, high nibble).
void PackK4Quants(std::vector<uint8_t>& b, size_t at) {
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      b[at + 32 * p + l] = static_cast<uint8_t>(K4(64 * p + l) | (K4(64 * p + 32 + l) << 4));
    }
  }
}

TEST(DequantizeRowTest, Q4_K) {
  std::vector<uint8_t> b(144);
  PutU16(b, 0, kHalfHalf);     // d
  PutU16(b, 2, kHalfQuarter);  // dmin
  PackScalesK4(b, 4);
  PackK4Quants(b, 16);
  std::vector<float> out(256);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ4_K, b.data(), out.data(), 256));
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    EXPECT_EQ(out[e], 0.5f * kScales.scale[s] * K4(e) - 0.25f * kScales.min[s]) << e;
  }
}

// The fifth bit of element e (sub-block s, position l) is bit s of qh[l].
// (The pattern differs between neighbouring sub-blocks at the same l.)
int K5(int e) { return K4(e) | ((((e >> 1) ^ (e >> 5)) & 1) << 4); }

TEST(DequantizeRowTest, Q5_K) {
  std::vector<uint8_t> b(176);
  PutU16(b, 0, kHalfQuarter);
  PutU16(b, 2, kHalfTwo);
  PackScalesK4(b, 4);
  for (int e = 0; e < 256; ++e) b[16 + e % 32] |= static_cast<uint8_t>((K5(e) >> 4) << (e / 32));
  PackK4Quants(b, 48);
  std::vector<float> out(256);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ5_K, b.data(), out.data(), 256));
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    EXPECT_EQ(out[e], 0.25f * kScales.scale[s] * K5(e) - 2.0f * kScales.min[s]) << e;
  }
}

// q6_K: element e = 128n + 32k + l has its low nibble in ql[64n + l + 32(k&1)]
// (low nibble for k < 2), two high bits at bits 2k of qh[32n + l], and the
// int8 scale scales[e / 16].
int Q6(int e) { return (e * 29 + 7) & 63; }
int8_t Q6Scale(int i) { return static_cast<int8_t>(i % 2 ? -(i * 8 + 1) : i * 8); }

TEST(DequantizeRowTest, Q6_K) {
  std::vector<uint8_t> b(210);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, k = (e % 128) / 32, l = e % 32;
    const int q = Q6(e);
    uint8_t& low = b[64 * n + l + 32 * (k & 1)];
    low |= static_cast<uint8_t>(k < 2 ? (q & 0x0f) : (q & 0x0f) << 4);
    b[128 + 32 * n + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
  }
  for (int i = 0; i < 16; ++i) b[192 + i] = static_cast<uint8_t>(Q6Scale(i));
  PutU16(b, 208, kHalfQuarter);
  std::vector<float> out(256);
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ6_K, b.data(), out.data(), 256));
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(out[e], 0.25f * Q6Scale(e / 16) * (Q6(e) - 32)) << e;
  }
}

// ---- bit-exact agreement with gguf-py on a fixed byte pattern ----

// Two blocks of byte i = (i*73 + 41 + type*7) & 0xff, with the half fields
// (d, dmin) of block k set to `half + k` so scales stay finite. The expected
// figures come from gguf-py 0.17 `gguf.quants.dequantize` on the same bytes
// (FNV-1a 64 over the float bit patterns, and the double sum).
struct PatternCase {
  GgmlType type;
  std::vector<std::pair<size_t, uint16_t>> halves;  // (offset in block, bits)
  uint64_t fnv;
  double sum;
  float y0, y1, y33, ylast;
};

std::vector<uint8_t> PatternBlocks(const PatternCase& c) {
  const auto t = TypeTraits(static_cast<uint32_t>(c.type));
  std::vector<uint8_t> b(2 * t->type_size);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = static_cast<uint8_t>((i * 73 + 41 + static_cast<uint32_t>(c.type) * 7) & 0xff);
  }
  for (size_t k = 0; k < 2; ++k) {
    for (const auto& [off, bits] : c.halves) {
      PutU16(b, k * t->type_size + off, static_cast<uint16_t>(bits + k));
    }
  }
  return b;
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

TEST(DequantizeRowTest, BitExactWithGgufPyOnPattern) {
  constexpr uint16_t kD = 0x2E66, kMinPos = 0x2A66, kMinNeg = 0xAA66;
  const PatternCase kCases[] = {
      {GgmlType::kQ4_0,
       {{0, kD}},
       0x623d36be645d8283ull,
       -3.60015869140625,
       0.0999755859375f,
       -0.599853515625f,
       -0.400146484375f,
       -0.50018310546875f},
      {GgmlType::kQ4_1,
       {{0, kD}, {2, kMinNeg}},
       0xa3ff15337ce66b83ull,
       44.8023681640625,
       0.14996337890625f,
       1.04974365234375f,
       1.450531005859375f,
       0.450164794921875f},
      {GgmlType::kQ5_0,
       {{0, kD}},
       0x95616acc50378483ull,
       -4.80059814453125,
       0.8997802734375f,
       -1.399658203125f,
       0.80029296875f,
       -0.70025634765625f},
      {GgmlType::kQ5_1,
       {{0, kD}, {2, kMinNeg}},
       0x7cb3592f97461883ull,
       98.0062255859375,
       0.14996337890625f,
       2.64935302734375f,
       1.850677490234375f,
       1.150421142578125f},
      {GgmlType::kQ8_0,
       {{0, kD}},
       0x2edf2e2ae6322a43ull,
       -28.7763671875,
       -1.2996826171875f,
       5.99853515625f,
       -1.8006591796875f,
       12.404541015625f},
      {GgmlType::kQ4_K,
       {{0, kD}, {2, kMinPos}},
       0x3b996e399887c66bull,
       12994.24365234375,
       42.63958740234375f,
       19.54522705078125f,
       20.2950439453125f,
       15.755767822265625f},
      {GgmlType::kQ5_K,
       {{0, kD}, {2, kMinPos}},
       0x4db14a86109acd8bull,
       26411.06640625,
       15.396240234375f,
       115.371826171875f,
       33.24188232421875f,
       35.563018798828125f},
      {GgmlType::kQ6_K,
       {{208, kD}},
       0xfa3d0d353f28ed55ull,
       -693.806396484375,
       202.4505615234375f,
       -209.94873046875f,
       41.98974609375f,
       301.71044921875f},
  };
  for (const PatternCase& c : kCases) {
    const auto t = TypeTraits(static_cast<uint32_t>(c.type));
    SCOPED_TRACE(std::string(t->name));
    const std::vector<uint8_t> b = PatternBlocks(c);
    std::vector<float> out(2 * t->block_size, std::nanf(""));
    ASSERT_TRUE(DequantizeRow(c.type, b.data(), out.data(), static_cast<int64_t>(out.size())));
    double sum = 0;
    for (float f : out) sum += f;
    EXPECT_EQ(out[0], c.y0);
    EXPECT_EQ(out[1], c.y1);
    EXPECT_EQ(out[33], c.y33);
    EXPECT_EQ(out.back(), c.ylast);
    EXPECT_EQ(sum, c.sum);
    EXPECT_EQ(Fnv1a(out), c.fnv);
  }
}

}  // namespace
}  // namespace headwise::kernels
