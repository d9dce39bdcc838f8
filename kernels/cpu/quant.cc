// Block layouts of the GGML tensor types and portable row dequantization to
// f32 (kernels/quant.h). The dequantizers follow ggml's reference
// dequantize_row_* code operation for operation, so results are bit-identical
// to ggml's CPU path. Blocks are read byte-wise with memcpy: tensor data in a
// mapped file has no alignment guarantee beyond the file's own.
#include "kernels/quant.h"

#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

namespace headwise::kernels {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy quants (q4_0 .. q8_1)
constexpr int kQKK = 256;  // elements per super-block of the K-quants

// The traits table, indexed by the ggml type number. Sizes are ggml's
// sizeof(block_*) (ggml-common.h); gaps are removed or never-defined types.
struct TraitsEntry {
  uint32_t type;
  GgmlTypeTraits traits;
};

constexpr std::array kTraits = {
    TraitsEntry{0, {"f32", 1, 4, true}},
    TraitsEntry{1, {"f16", 1, 2, true}},
    TraitsEntry{2, {"q4_0", kQK, 2 + kQK / 2, true}},
    TraitsEntry{3, {"q4_1", kQK, 2 * 2 + kQK / 2, true}},
    TraitsEntry{6, {"q5_0", kQK, 2 + 4 + kQK / 2, true}},
    TraitsEntry{7, {"q5_1", kQK, 2 * 2 + 4 + kQK / 2, true}},
    TraitsEntry{8, {"q8_0", kQK, 2 + kQK, true}},
    // ggml's block_q8_1 holds two halves (d, s): 36 bytes. (gguf-py's table says
    // 40, from an older float layout; ggml itself is authoritative.)
    TraitsEntry{9, {"q8_1", kQK, 2 * 2 + kQK, false}},
    TraitsEntry{10, {"q2_K", kQKK, kQKK / 16 + kQKK / 4 + 2 * 2, false}},
    TraitsEntry{11, {"q3_K", kQKK, kQKK / 8 + kQKK / 4 + 12 + 2, false}},
    TraitsEntry{12, {"q4_K", kQKK, 2 * 2 + 12 + kQKK / 2, true}},
    TraitsEntry{13, {"q5_K", kQKK, 2 * 2 + 12 + kQKK / 8 + kQKK / 2, true}},
    TraitsEntry{14, {"q6_K", kQKK, kQKK / 2 + kQKK / 4 + kQKK / 16 + 2, true}},
    TraitsEntry{15, {"q8_K", kQKK, 4 + kQKK + kQKK / 16 * 2, false}},
    TraitsEntry{16, {"iq2_xxs", kQKK, 2 + kQKK / 8 * 2, false}},
    TraitsEntry{17, {"iq2_xs", kQKK, 2 + kQKK / 8 * 2 + kQKK / 32, false}},
    TraitsEntry{18, {"iq3_xxs", kQKK, 2 + 3 * (kQKK / 8), false}},
    TraitsEntry{19, {"iq1_s", kQKK, 2 + kQKK / 8 + kQKK / 16, false}},
    TraitsEntry{20, {"iq4_nl", kQK, 2 + kQK / 2, false}},
    TraitsEntry{21, {"iq3_s", kQKK, 2 + kQKK / 4 + kQKK / 8 + kQKK / 32 + 4, false}},
    TraitsEntry{22, {"iq2_s", kQKK, 2 + kQKK / 4 + kQKK / 16, false}},
    TraitsEntry{23, {"iq4_xs", kQKK, 2 + 2 + kQKK / 64 + kQKK / 2, false}},
    TraitsEntry{24, {"i8", 1, 1, true}},
    TraitsEntry{25, {"i16", 1, 2, true}},
    TraitsEntry{26, {"i32", 1, 4, true}},
    TraitsEntry{27, {"i64", 1, 8, false}},
    TraitsEntry{28, {"f64", 1, 8, true}},
    TraitsEntry{29, {"iq1_m", kQKK, kQKK / 8 + kQKK / 16 + kQKK / 32, false}},
    TraitsEntry{30, {"bf16", 1, 2, true}},
    TraitsEntry{34, {"tq1_0", kQKK, (kQKK - 4 * kQKK / 64) / 5 + kQKK / 64 + 2, false}},
    TraitsEntry{35, {"tq2_0", kQKK, kQKK / 4 + 2, false}},
    TraitsEntry{39, {"mxfp4", kQK, 1 + kQK / 2, false}},
};

// ggml's sizes, spelled out so a slip in the formulas above fails to compile.
constexpr uint32_t SizeOf(uint32_t type) {
  for (const auto& e : kTraits) {
    if (e.type == type) return e.traits.type_size;
  }
  return 0;
}
static_assert(SizeOf(2) == 18 && SizeOf(3) == 20 && SizeOf(6) == 22 && SizeOf(7) == 24);
static_assert(SizeOf(8) == 34 && SizeOf(9) == 36);
static_assert(SizeOf(10) == 84 && SizeOf(11) == 110 && SizeOf(12) == 144 && SizeOf(13) == 176);
static_assert(SizeOf(14) == 210 && SizeOf(15) == 292);
static_assert(SizeOf(16) == 66 && SizeOf(17) == 74 && SizeOf(18) == 98 && SizeOf(19) == 50);
static_assert(SizeOf(20) == 18 && SizeOf(21) == 110 && SizeOf(22) == 82 && SizeOf(23) == 136);
static_assert(SizeOf(29) == 56 && SizeOf(34) == 54 && SizeOf(35) == 66 && SizeOf(39) == 17);

// ---- scalar conversions ---------------------------------------------------

template <typename T>
T LoadLe(const uint8_t* p) {
  std::array<uint8_t, sizeof(T)> bytes;
  std::memcpy(bytes.data(), p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(bytes[i], bytes[sizeof(T) - 1 - i]);
  }
  return std::bit_cast<T>(bytes);
}

// IEEE half to float, exact for every input (subnormals, inf, NaN payloads).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: normalise into a float.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

float BF16ToFloat(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

float LoadHalf(const uint8_t* p) { return HalfToFloat(LoadLe<uint16_t>(p)); }

// ---- legacy quants ---------------------------------------------------------

void DequantizeQ4_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 18, y += kQK) {
    const float d = LoadHalf(x);
    const uint8_t* qs = x + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      const int x0 = (qs[j] & 0x0f) - 8;
      const int x1 = (qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + kQK / 2] = x1 * d;
    }
  }
}

void DequantizeQ4_1(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 20, y += kQK) {
    const float d = LoadHalf(x);
    const float m = LoadHalf(x + 2);
    const uint8_t* qs = x + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      const int x0 = qs[j] & 0x0f;
      const int x1 = qs[j] >> 4;
      y[j] = x0 * d + m;
      y[j + kQK / 2] = x1 * d + m;
    }
  }
}

void DequantizeQ5_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 22, y += kQK) {
    const float d = LoadHalf(x);
    const uint32_t qh = LoadLe<uint32_t>(x + 2);
    const uint8_t* qs = x + 6;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
      const int32_t x0 = ((qs[j] & 0x0f) | xh_0) - 16;
      const int32_t x1 = ((qs[j] >> 4) | xh_1) - 16;
      y[j] = x0 * d;
      y[j + kQK / 2] = x1 * d;
    }
  }
}

void DequantizeQ5_1(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 24, y += kQK) {
    const float d = LoadHalf(x);
    const float m = LoadHalf(x + 2);
    const uint32_t qh = LoadLe<uint32_t>(x + 4);
    const uint8_t* qs = x + 8;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
      const int x0 = (qs[j] & 0x0f) | xh_0;
      const int x1 = (qs[j] >> 4) | xh_1;
      y[j] = x0 * d + m;
      y[j + kQK / 2] = x1 * d + m;
    }
  }
}

void DequantizeQ8_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 34, y += kQK) {
    const float d = LoadHalf(x);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<int8_t>(x[2 + j]) * d;
  }
}

// ---- K-quants --------------------------------------------------------------

// The 6-bit scale and min of sub-block j (0..7) from the 12 packed scale bytes
// of a q4_K / q5_K super-block (ggml's get_scale_min_k4).
void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// block_q4_K: d, dmin (halves), scales[12], qs[128].
void DequantizeQ4_K(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 144) {
    const float d = LoadHalf(x);
    const float min = LoadHalf(x + 2);
    const uint8_t* scales = x + 4;
    const uint8_t* q = x + 16;
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < kQKK; j += 64) {
      GetScaleMinK4(is + 0, scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      GetScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

// block_q5_K: d, dmin (halves), scales[12], qh[32], qs[128].
void DequantizeQ5_K(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 176) {
    const float d = LoadHalf(x);
    const float min = LoadHalf(x + 2);
    const uint8_t* scales = x + 4;
    const uint8_t* qh = x + 16;
    const uint8_t* ql = x + 48;
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < kQKK; j += 64) {
      GetScaleMinK4(is + 0, scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      GetScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

// block_q6_K: ql[128], qh[64], scales[16] (int8), d (half).
void DequantizeQ6_K(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 210) {
    const float d = LoadHalf(x + 208);
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const uint8_t* sc_bytes = x + 192;
    for (int n = 0; n < kQKK; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 =
            static_cast<int8_t>(((ql[l + 0] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32);
        const int8_t q2 =
            static_cast<int8_t>(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        const int8_t q3 = static_cast<int8_t>(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        const int8_t q4 = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        y[l + 0] = d * static_cast<int8_t>(sc_bytes[is + 0]) * q1;
        y[l + 32] = d * static_cast<int8_t>(sc_bytes[is + 2]) * q2;
        y[l + 64] = d * static_cast<int8_t>(sc_bytes[is + 4]) * q3;
        y[l + 96] = d * static_cast<int8_t>(sc_bytes[is + 6]) * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc_bytes += 8;
    }
  }
}

// ---- plain element types -----------------------------------------------------

template <typename T, typename Convert>
void DequantizePlain(const uint8_t* x, float* y, int64_t n, Convert convert) {
  for (int64_t i = 0; i < n; ++i) y[i] = convert(LoadLe<T>(x + i * sizeof(T)));
}

}  // namespace

std::optional<GgmlTypeTraits> TypeTraits(uint32_t type) {
  for (const auto& e : kTraits) {
    if (e.type == type) return e.traits;
  }
  return std::nullopt;
}

std::optional<uint64_t> RowBytes(GgmlType type, uint64_t n) {
  const std::optional<GgmlTypeTraits> t = TypeTraits(static_cast<uint32_t>(type));
  if (!t || n % t->block_size != 0) return std::nullopt;
  const uint64_t blocks = n / t->block_size;
  if (blocks > std::numeric_limits<uint64_t>::max() / t->type_size) return std::nullopt;
  return blocks * t->type_size;
}

bool DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const std::optional<GgmlTypeTraits> t = TypeTraits(static_cast<uint32_t>(type));
  if (!t || !t->can_dequantize || n < 0 || n % t->block_size != 0) return false;
  const auto* x = static_cast<const uint8_t*>(src);
  const int64_t nb = n / t->block_size;
  switch (type) {
    case GgmlType::kF32:
      DequantizePlain<float>(x, dst, n, [](float v) { return v; });
      return true;
    case GgmlType::kF16:
      DequantizePlain<uint16_t>(x, dst, n, HalfToFloat);
      return true;
    case GgmlType::kBF16:
      DequantizePlain<uint16_t>(x, dst, n, BF16ToFloat);
      return true;
    case GgmlType::kF64:
      DequantizePlain<double>(x, dst, n, [](double v) { return static_cast<float>(v); });
      return true;
    case GgmlType::kI8:
      DequantizePlain<int8_t>(x, dst, n, [](int8_t v) { return static_cast<float>(v); });
      return true;
    case GgmlType::kI16:
      DequantizePlain<int16_t>(x, dst, n, [](int16_t v) { return static_cast<float>(v); });
      return true;
    case GgmlType::kI32:
      DequantizePlain<int32_t>(x, dst, n, [](int32_t v) { return static_cast<float>(v); });
      return true;
    case GgmlType::kQ4_0:
      DequantizeQ4_0(x, dst, nb);
      return true;
    case GgmlType::kQ4_1:
      DequantizeQ4_1(x, dst, nb);
      return true;
    case GgmlType::kQ5_0:
      DequantizeQ5_0(x, dst, nb);
      return true;
    case GgmlType::kQ5_1:
      DequantizeQ5_1(x, dst, nb);
      return true;
    case GgmlType::kQ8_0:
      DequantizeQ8_0(x, dst, nb);
      return true;
    case GgmlType::kQ4_K:
      DequantizeQ4_K(x, dst, nb);
      return true;
    case GgmlType::kQ5_K:
      DequantizeQ5_K(x, dst, nb);
      return true;
    case GgmlType::kQ6_K:
      DequantizeQ6_K(x, dst, nb);
      return true;
    default:
      return false;
  }
}

}  // namespace headwise::kernels
