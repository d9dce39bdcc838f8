// Element-wise and row-wise CPU ops of the Llama-family forward pass (RMSNorm,
// RoPE, SwiGLU, residual add, softmax for sampling) and the KV storage dtypes
// with their f32 conversions. RoPE follows ggml's CPU op (ggml_compute_forward_rope)
// with ext_factor = 0 and attn_factor = 1, so GGUF weights behave as in llama.cpp.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace headwise::kernels {

// ---- KV storage dtypes --------------------------------------------------------

enum class KvDtype : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Bytes per element: 4, 2, 2.
size_t KvDtypeSize(KvDtype dtype);
// "f32", "f16", "bf16" (the config spelling).
std::string_view KvDtypeName(KvDtype dtype);
// Inverse of KvDtypeName; nullopt for anything else.
std::optional<KvDtype> ParseKvDtype(std::string_view name);

// IEEE binary16 bits -> f32. Exact for every input (subnormals, inf, NaN).
// Branch-free 32-bit integer ops so loops over it vectorise (SSE2 and up).
inline float F16ToF32(uint16_t h) {
  const uint32_t w = h;
  // Exponent+mantissa moved to an f32's bit positions; scaling by 2^112
  // rebiases the exponent, and turns subnormal halves into exact products.
  const uint32_t shifted = (w << 13) & 0x0fffe000u;
  const uint32_t sign = (w << 16) & 0x80000000u;
  uint32_t bits = std::bit_cast<uint32_t>(std::bit_cast<float>(shifted) * 0x1p112f);
  // inf / NaN (exponent 31): force the f32 exponent to 255, keep the mantissa.
  bits |= (0u - static_cast<uint32_t>(static_cast<int32_t>(shifted) > 0x0f7fe000)) & 0x7f800000u;
  return std::bit_cast<float>(bits | sign);
}

// bfloat16 bits -> f32 (exact).
inline float Bf16ToF32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// f32 -> binary16 bits, round to nearest even; overflow gives inf, NaN stays NaN.
uint16_t F32ToF16(float f);
// f32 -> bfloat16 bits, round to nearest even; NaN stays (quiet) NaN.
uint16_t F32ToBf16(float f);

// Converts n elements between f32 and a KV dtype. src and dst must not overlap
// (except for kF32, where they may be equal).
void ToKvDtype(KvDtype dst_dtype, const float* src, void* dst, int64_t n);
void FromKvDtype(KvDtype src_dtype, const void* src, float* dst, int64_t n);

// ---- Row ops --------------------------------------------------------------------
// All tensors are f32, row-major. out may equal an input (in place) but must not
// otherwise overlap one.

// Llama RMSNorm of each of `rows` rows of n: out = x / sqrt(mean(x^2) + eps) * weight.
// The mean of squares is accumulated in double, as ggml does.
void RmsNorm(float* out, const float* x, const float* weight, int64_t rows, int64_t n, float eps);

// out = a + b, n elements (the residual add).
void Add(float* out, const float* a, const float* b, int64_t n);

// out = silu(gate) * up with silu(g) = g / (1 + exp(-g)), n elements.
void SwiGlu(float* out, const float* gate, const float* up, int64_t n);

// In-place numerically stable softmax of n logits (max subtracted, sum in
// double). Entries of -inf get probability 0; if every entry is -inf, all
// outputs are 0. n >= 1.
void Softmax(float* x, int64_t n);

// ---- RoPE -----------------------------------------------------------------------

enum class RopeMode : uint8_t {
  // GGML_ROPE_TYPE_NORMAL: rotates adjacent pairs (x[2i], x[2i+1]). Used by
  // llama.cpp for LLM_ARCH_LLAMA, whose GGUF q/k weights the converter permuted.
  kNorm = 0,
  // GGML_ROPE_TYPE_NEOX: rotates (x[i], x[i + n_rot/2]) (qwen2, unpermuted HF).
  kNeox = 2,
};

struct RopeParams {
  RopeMode mode = RopeMode::kNorm;
  int32_t n_rot = 0;  // rotated dims of each head: even, 0 < n_rot <= head_dim
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;  // linear position interpolation: theta *= freq_scale
  // Optional [n_rot/2] per-pair factors dividing theta (llama3 rope scaling,
  // rope_freqs.weight); nullptr means all 1.
  const float* freq_factors = nullptr;
};

// Rotates x [rows x n_heads x head_dim] in place, row r at absolute position
// pos[r]: pair i (0 <= i < n_rot/2) turns by
//   theta = pos * freq_scale * freq_base^(-2i/n_rot) / freq_factors[i].
// Dims past n_rot are untouched. Angles and their sin/cos are computed in
// double (ggml uses float, which loses precision at large positions).
// row_stride is floats between rows; 0 means n_heads * head_dim. Returns
// false, changing nothing, when n_rot is not even and in (0, head_dim], or
// freq_base or freq_scale is not positive (values a model file supplies).
bool Rope(float* x, const int32_t* pos, int64_t rows, int32_t n_heads, int32_t head_dim,
          const RopeParams& params, int64_t row_stride = 0);

}  // namespace headwise::kernels
