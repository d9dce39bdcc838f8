// Group-wise low-bit quantization of attention keys (HCAttention's key
// cache): each row of `dim` floats is cut into groups of `group` values;
// a group keeps an f32 scale and zero (its min) and one unsigned code per
// value, `bits` wide (4: two codes per byte; 2: four), low bits first.
//   code = round((x - min) / scale), scale = (max - min) / (2^bits - 1)
//   x' = zero + scale * code, |x - x'| <= scale / 2
// Scoring reads codes directly: q . x' = sum over groups of
//   zero * sum(q) + scale * sum(q_i * code_i).
// A group whose values are all equal has scale 0 and is exact.
#pragma once

#include <cstddef>
#include <cstdint>

namespace headwise::kernels {

struct KeyQuantFormat {
  int32_t bits = 4;    // 2 or 4
  int32_t group = 32;  // values per group; divides dim
  int32_t dim = 64;    // values per row

  // Bytes of one row's codes, and of its scales and zeros (f32 pairs).
  int64_t CodeBytes() const { return int64_t(dim) * bits / 8; }
  int32_t Groups() const { return dim / group; }
  // Null when consistent, else a static message naming the problem.
  const char* Error() const;
};

// Quantizes `rows` rows of `x` (row stride `x_stride` floats) into `codes`
// (rows * CodeBytes()) and `scale_zero` (rows * Groups() pairs of scale,
// zero). The format must be consistent (Error() == nullptr).
void QuantizeKeys(const KeyQuantFormat& f, const float* x, int64_t x_stride, int64_t rows,
                  uint8_t* codes, float* scale_zero);

// The inverse: rows of `f.dim` floats into `x` (row stride `x_stride`).
void DequantizeKeys(const KeyQuantFormat& f, const uint8_t* codes, const float* scale_zero,
                    int64_t rows, float* x, int64_t x_stride);

// scores[r] = q . row r (dequantized), without materialising the rows.
void QuantizedKeyScores(const KeyQuantFormat& f, const float* q, const uint8_t* codes,
                        const float* scale_zero, int64_t rows, float* scores);

// The same for `n_q` queries at once (n_q x f.dim floats, contiguous):
// scores[j * scores_stride + r] = q_j . row r, each row unpacked once for
// all queries, accumulated in f32 (the decode-time path; QuantizedKeyScores
// is its f64 reference). n_q <= 64, f.dim <= 256.
void QuantizedKeyScoresMulti(const KeyQuantFormat& f, const float* q, int32_t n_q,
                             const uint8_t* codes, const float* scale_zero, int64_t rows,
                             float* scores, int64_t scores_stride);

}  // namespace headwise::kernels
