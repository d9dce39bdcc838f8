// Scalar reference implementation, and an AVX2 path for the decode-time
// 4-bit scoring chosen at run time (the build targets baseline x86-64);
// rows are independent (callers split them across threads).
#include "kernels/key_quant.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace headwise::kernels {

const char* KeyQuantFormat::Error() const {
  if (bits != 2 && bits != 4) return "bits must be 2 or 4";
  if (dim < 1 || group < 1 || dim % group != 0) return "group must divide dim";
  if (group * bits % 8 != 0) return "a group's codes must fill whole bytes";
  return nullptr;
}

namespace {

int Code(const uint8_t* codes, int32_t i, int32_t bits) {
  const int per_byte = 8 / bits;
  return (codes[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1);
}

}  // namespace

void QuantizeKeys(const KeyQuantFormat& f, const float* x, int64_t x_stride, int64_t rows,
                  uint8_t* codes, float* scale_zero) {
  const int32_t levels = (1 << f.bits) - 1, per_byte = 8 / f.bits;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * x_stride;
    uint8_t* out = codes + r * f.CodeBytes();
    std::fill(out, out + f.CodeBytes(), uint8_t{0});
    for (int32_t g = 0; g < f.Groups(); ++g) {
      const float* v = row + g * f.group;
      const auto [lo, hi] = std::minmax_element(v, v + f.group);
      const float scale = (*hi - *lo) / levels;
      float* sz = scale_zero + 2 * (r * f.Groups() + g);
      sz[0] = scale;
      sz[1] = *lo;
      for (int32_t i = 0; i < f.group; ++i) {
        const int32_t at = g * f.group + i;
        const int code =
            scale > 0 ? std::clamp(int(std::lrint((v[i] - *lo) / scale)), 0, levels) : 0;
        out[at / per_byte] |= static_cast<uint8_t>(code << ((at % per_byte) * f.bits));
      }
    }
  }
}

void DequantizeKeys(const KeyQuantFormat& f, const uint8_t* codes, const float* scale_zero,
                    int64_t rows, float* x, int64_t x_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes + r * f.CodeBytes();
    for (int32_t g = 0; g < f.Groups(); ++g) {
      const float* sz = scale_zero + 2 * (r * f.Groups() + g);
      for (int32_t i = 0; i < f.group; ++i) {
        const int32_t at = g * f.group + i;
        x[r * x_stride + at] = sz[1] + sz[0] * float(Code(in, at, f.bits));
      }
    }
  }
}

void QuantizedKeyScores(const KeyQuantFormat& f, const float* q, const uint8_t* codes,
                        const float* scale_zero, int64_t rows, float* scores) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes + r * f.CodeBytes();
    double total = 0;
    for (int32_t g = 0; g < f.Groups(); ++g) {
      const float* sz = scale_zero + 2 * (r * f.Groups() + g);
      double q_sum = 0, q_code = 0;
      for (int32_t i = 0; i < f.group; ++i) {
        const int32_t at = g * f.group + i;
        q_sum += q[at];
        q_code += double(q[at]) * Code(in, at, f.bits);
      }
      total += sz[1] * q_sum + sz[0] * q_code;
    }
    scores[r] = static_cast<float>(total);
  }
}

namespace {

constexpr int32_t kMaxDim = 256, kMaxQ = 64;

// Per query and group, the sum of its values (the zero's weight).
using GroupSums = float[kMaxQ][kMaxDim];
void SumGroups(const KeyQuantFormat& f, const float* q, int32_t n_q, GroupSums& sums) {
  for (int32_t j = 0; j < n_q; ++j) {
    for (int32_t g = 0; g < f.Groups(); ++g) {
      float sum = 0;
      for (int32_t i = 0; i < f.group; ++i) sum += q[j * f.dim + g * f.group + i];
      sums[j][g] = sum;
    }
  }
}

#if defined(__x86_64__)
// 4-bit codes, groups of a multiple of 16 values: each 8 bytes of a row (16
// codes, low nibbles the even values) become two vectors of 8 floats, and
// every query multiplies them by its values split the same way (even, odd).
__attribute__((target("avx2,fma"))) void Scores4BitAvx2(const KeyQuantFormat& f, const float* q,
                                                        int32_t n_q, const uint8_t* codes,
                                                        const float* scale_zero, int64_t rows,
                                                        float* scores, int64_t scores_stride) {
  constexpr int32_t kMaxChunks = kMaxDim / 16;
  const int32_t groups = f.Groups(), chunks = f.dim / 16, chunks_per_group = f.group / 16;
  alignas(32) float q_even[kMaxQ][kMaxChunks][8], q_odd[kMaxQ][kMaxChunks][8];
  GroupSums q_sums;
  SumGroups(f, q, n_q, q_sums);
  for (int32_t j = 0; j < n_q; ++j) {
    for (int32_t c = 0; c < chunks; ++c) {
      for (int32_t i = 0; i < 8; ++i) {
        q_even[j][c][i] = q[j * f.dim + 16 * c + 2 * i];
        q_odd[j][c][i] = q[j * f.dim + 16 * c + 2 * i + 1];
      }
    }
  }
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  __m256 lo[kMaxChunks], hi[kMaxChunks];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes + r * f.CodeBytes();
    for (int32_t c = 0; c < chunks; ++c) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 8 * c));
      lo[c] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(bytes, low_nibbles)));
      hi[c] = _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibbles)));
    }
    const float* sz = scale_zero + 2 * r * groups;
    for (int32_t j = 0; j < n_q; ++j) {
      __m256 total = _mm256_setzero_ps();
      float zeros = 0;
      for (int32_t g = 0; g < groups; ++g) {
        __m256 dot = _mm256_setzero_ps();
        for (int32_t c = g * chunks_per_group; c < (g + 1) * chunks_per_group; ++c) {
          dot = _mm256_fmadd_ps(_mm256_load_ps(q_even[j][c]), lo[c], dot);
          dot = _mm256_fmadd_ps(_mm256_load_ps(q_odd[j][c]), hi[c], dot);
        }
        total = _mm256_fmadd_ps(_mm256_set1_ps(sz[2 * g]), dot, total);
        zeros += sz[2 * g + 1] * q_sums[j][g];
      }
      __m128 sum = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
      sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
      sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
      scores[j * scores_stride + r] = _mm_cvtss_f32(sum) + zeros;
    }
  }
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

}  // namespace

void QuantizedKeyScoresMulti(const KeyQuantFormat& f, const float* q, int32_t n_q,
                             const uint8_t* codes, const float* scale_zero, int64_t rows,
                             float* scores, int64_t scores_stride) {
#if defined(__x86_64__)
  if (f.bits == 4 && f.group % 16 == 0 && HasAvx2()) {
    Scores4BitAvx2(f, q, n_q, codes, scale_zero, rows, scores, scores_stride);
    return;
  }
#endif
  constexpr int32_t kLanes = 8;
  const int32_t groups = f.Groups(), levels = (1 << f.bits) - 1, per_byte = 8 / f.bits;
  GroupSums q_sums;
  SumGroups(f, q, n_q, q_sums);
  // Codes as floats, one byte's worth at a time from a table.
  float table[256][4];
  for (int32_t byte = 0; byte < 256; ++byte) {
    for (int32_t k = 0; k < per_byte; ++k) table[byte][k] = float((byte >> (k * f.bits)) & levels);
  }
  alignas(32) float unpacked[kMaxDim];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes + r * f.CodeBytes();
    for (int32_t b = 0; b < f.CodeBytes(); ++b) {
      for (int32_t k = 0; k < per_byte; ++k) unpacked[b * per_byte + k] = table[in[b]][k];
    }
    const float* sz = scale_zero + 2 * r * groups;
    for (int32_t j = 0; j < n_q; ++j) {
      const float* qj = q + j * f.dim;
      float total = 0;
      for (int32_t g = 0; g < groups; ++g) {
        // Lanes of partial sums let the compiler vectorize without reassociating.
        float lanes[kLanes] = {};
        const int32_t base = g * f.group, full = f.group / kLanes * kLanes;
        for (int32_t i = 0; i < full; i += kLanes) {
          for (int32_t l = 0; l < kLanes; ++l)
            lanes[l] += qj[base + i + l] * unpacked[base + i + l];
        }
        float dot = 0;
        for (int32_t l = 0; l < kLanes; ++l) dot += lanes[l];
        for (int32_t i = full; i < f.group; ++i) dot += qj[base + i] * unpacked[base + i];
        total += sz[2 * g + 1] * q_sums[j][g] + sz[2 * g] * dot;
      }
      scores[j * scores_stride + r] = total;
    }
  }
}

}  // namespace headwise::kernels
