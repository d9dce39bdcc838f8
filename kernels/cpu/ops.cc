// CPU implementations of the row ops and KV dtype conversions declared in
// kernels/ops.h. Plain loops written so GCC vectorises them at -O2 without
// -march flags; reductions use double where ggml does (RMSNorm, softmax sum).
#include "kernels/ops.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace headwise::kernels {

size_t KvDtypeSize(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return 4;
    case KvDtype::kF16:
    case KvDtype::kBF16:
      return 2;
  }
  return 0;
}

std::string_view KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return "f32";
    case KvDtype::kF16:
      return "f16";
    case KvDtype::kBF16:
      return "bf16";
  }
  return "?";
}

std::optional<KvDtype> ParseKvDtype(std::string_view name) {
  if (name == "f32") return KvDtype::kF32;
  if (name == "f16") return KvDtype::kF16;
  if (name == "bf16") return KvDtype::kBF16;
  return std::nullopt;
}

uint16_t F32ToF16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) {  // NaN: keep the top payload bits, force quiet
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (ax >= 0x38800000u) {  // >= 2^-14: normal half; round the 13 dropped bits
    ax += 0xfffu + ((ax >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((ax - 0x38000000u) >> 13));
  }
  if (ax <= 0x33000000u) return sign;  // <= 2^-25: rounds to (signed) zero
  // Subnormal half: value / 2^-24 = mantissa >> (126 - exponent), rounded.
  const uint32_t e = ax >> 23;
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;  // may carry into the smallest normal
  return static_cast<uint16_t>(sign | h);
}

uint16_t F32ToBf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

void ToKvDtype(KvDtype dst_dtype, const float* src, void* dst, int64_t n) {
  switch (dst_dtype) {
    case KvDtype::kF32:
      if (dst != src && n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case KvDtype::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    case KvDtype::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToBf16(src[i]);
      return;
    }
  }
}

void FromKvDtype(KvDtype src_dtype, const void* src, float* dst, int64_t n) {
  if (src_dtype == KvDtype::kF32) {
    if (dst != src && n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  // Blocks of 8 with a constant inner trip count vectorise under -O2's cost model.
  const auto* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (src_dtype == KvDtype::kF16) {
    for (; i + 8 <= n; i += 8) {
      for (int j = 0; j < 8; ++j) dst[i + j] = F16ToF32(s[i + j]);
    }
    for (; i < n; ++i) dst[i] = F16ToF32(s[i]);
  } else {
    for (; i + 8 <= n; i += 8) {
      for (int j = 0; j < 8; ++j) dst[i + j] = Bf16ToF32(s[i + j]);
    }
    for (; i < n; ++i) dst[i] = Bf16ToF32(s[i]);
  }
}

void RmsNorm(float* out, const float* x, const float* weight, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = out + r * n;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * scale) * weight[i];
  }
}

void Add(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void SwiGlu(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  if (max == -INFINITY) {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

bool Rope(float* x, const int32_t* pos, int64_t rows, int32_t n_heads, int32_t head_dim,
          const RopeParams& params, int64_t row_stride) {
  if (params.n_rot <= 0 || params.n_rot % 2 != 0 || params.n_rot > head_dim) return false;
  if (!(params.freq_base > 0.0f) || !(params.freq_scale > 0.0f)) return false;
  const int32_t n_pairs = params.n_rot / 2;
  if (rows <= 0 || n_heads <= 0) return true;
  if (row_stride == 0) row_stride = static_cast<int64_t>(n_heads) * head_dim;

  // Per-pair angular speed, then per row one cos/sin table shared by all heads.
  std::vector<double> inv_freq(n_pairs);
  for (int32_t i = 0; i < n_pairs; ++i) {
    const double ff = params.freq_factors != nullptr ? params.freq_factors[i] : 1.0;
    inv_freq[i] = static_cast<double>(params.freq_scale) *
                  std::pow(static_cast<double>(params.freq_base), -2.0 * i / params.n_rot) / ff;
  }
  std::vector<float> cos_t(n_pairs), sin_t(n_pairs);
  // Element offsets of the two members of pair i.
  const int32_t stride0 = params.mode == RopeMode::kNorm ? 2 : 1;
  const int32_t offset1 = params.mode == RopeMode::kNorm ? 1 : n_pairs;

  for (int64_t r = 0; r < rows; ++r) {
    const double p = pos[r];
    for (int32_t i = 0; i < n_pairs; ++i) {
      const double theta = p * inv_freq[i];
      cos_t[i] = static_cast<float>(std::cos(theta));
      sin_t[i] = static_cast<float>(std::sin(theta));
    }
    for (int32_t h = 0; h < n_heads; ++h) {
      float* v = x + r * row_stride + static_cast<int64_t>(h) * head_dim;
      for (int32_t i = 0; i < n_pairs; ++i) {
        float* a = v + i * stride0;
        const float x0 = a[0];
        const float x1 = a[offset1];
        a[0] = x0 * cos_t[i] - x1 * sin_t[i];
        a[offset1] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
  return true;
}

}  // namespace headwise::kernels
