// GGML tensor types as stored in GGUF files: their block layouts and row
// dequantization to f32. Compute only: no I/O. Numbering follows ggml.h so
// values read from a file map directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace headwise::kernels {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct GgmlTypeTraits {
  std::string_view name;  // as ggml names it: "f32", "q4_1", "q6_K", ...
  uint32_t block_size;    // elements per block
  uint32_t type_size;     // bytes per block
  bool can_dequantize;    // DequantizeRow supports it
};

// Traits of a known type; nullopt for a value ggml does not define.
std::optional<GgmlTypeTraits> TypeTraits(uint32_t type);

// Bytes of a row of `n` elements; nullopt when n is not a multiple of the
// block size or the type is unknown.
std::optional<uint64_t> RowBytes(GgmlType type, uint64_t n);

// Dequantizes one row of `n` elements (a multiple of the block size) from
// `src` to `dst`. Returns false when the type cannot be dequantized.
bool DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace headwise::kernels
