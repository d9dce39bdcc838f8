// One thread per 32 output elements (a legacy-quant block, or an eighth of a
// K-quant super-block), written as four 16-byte stores; plain types one thread
// per element. Mirrors kernels/cpu/quant.cc; __fmul_rn/__fadd_rn keep nvcc from
// fusing what the CPU rounds twice.
#include <cuda_fp16.h>

#include "kernels/cuda/dequant.cuh"

namespace headwise::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint16_t ToBf16(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

__device__ __forceinline__ float LoadHalf(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}

__device__ __forceinline__ float MulSub(float a, float b, float c) {
  return __fsub_rn(__fmul_rn(a, b), c);
}
__device__ __forceinline__ float MulAdd(float a, float b, float c) {
  return __fadd_rn(__fmul_rn(a, b), c);
}

// ggml's get_scale_min_k4.
__device__ __forceinline__ void ScaleMinK4(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Group j of a block at x (j = 0 for 32-element blocks) into y[32].
template <GgmlType T>
__device__ void DequantizeGroup(const uint8_t* x, int j, float* y) {
  if constexpr (T == GgmlType::kQ4_0) {
    const float d = LoadHalf(x);
    for (int l = 0; l < 16; ++l) {
      y[l] = __fmul_rn(static_cast<float>((x[2 + l] & 0x0f) - 8), d);
      y[l + 16] = __fmul_rn(static_cast<float>((x[2 + l] >> 4) - 8), d);
    }
  } else if constexpr (T == GgmlType::kQ4_1) {
    const float d = LoadHalf(x), m = LoadHalf(x + 2);
    for (int l = 0; l < 16; ++l) {
      y[l] = MulAdd(static_cast<float>(x[4 + l] & 0x0f), d, m);
      y[l + 16] = MulAdd(static_cast<float>(x[4 + l] >> 4), d, m);
    }
  } else if constexpr (T == GgmlType::kQ5_0 || T == GgmlType::kQ5_1) {
    constexpr bool kQ51 = T == GgmlType::kQ5_1;
    const float d = LoadHalf(x), m = kQ51 ? LoadHalf(x + 2) : 0.0f;
    const uint8_t* h = x + (kQ51 ? 4 : 2);
    const uint32_t qh = h[0] | (h[1] << 8) | (h[2] << 16) | (static_cast<uint32_t>(h[3]) << 24);
    const uint8_t* qs = h + 4;
    for (int l = 0; l < 16; ++l) {
      const int x0 = (qs[l] & 0x0f) | (((qh >> l) << 4) & 0x10);
      const int x1 = (qs[l] >> 4) | ((qh >> (l + 12)) & 0x10);
      if constexpr (kQ51) {
        y[l] = MulAdd(static_cast<float>(x0), d, m);
        y[l + 16] = MulAdd(static_cast<float>(x1), d, m);
      } else {
        y[l] = __fmul_rn(static_cast<float>(x0 - 16), d);
        y[l + 16] = __fmul_rn(static_cast<float>(x1 - 16), d);
      }
    }
  } else if constexpr (T == GgmlType::kQ8_0) {
    const float d = LoadHalf(x);
    for (int l = 0; l < 32; ++l)
      y[l] = __fmul_rn(static_cast<float>(static_cast<int8_t>(x[2 + l])), d);
  } else if constexpr (T == GgmlType::kQ4_K || T == GgmlType::kQ5_K) {
    const float d = LoadHalf(x), dmin = LoadHalf(x + 2);
    int sc, m;
    ScaleMinK4(j, x + 4, &sc, &m);
    const float d1 = __fmul_rn(d, static_cast<float>(sc)),
                m1 = __fmul_rn(dmin, static_cast<float>(m));
    const int pair = j / 2, shift = (j % 2) * 4;
    if constexpr (T == GgmlType::kQ4_K) {
      const uint8_t* q = x + 16 + 32 * pair;
      for (int l = 0; l < 32; ++l)
        y[l] = MulSub(d1, static_cast<float>((q[l] >> shift) & 0x0f), m1);
    } else {
      const uint8_t* qh = x + 16;
      const uint8_t* ql = x + 48 + 32 * pair;
      const int u = 1 << j;  // u1 = 1 << 2 pair, u2 = 2 << 2 pair
      for (int l = 0; l < 32; ++l) {
        const int q = ((ql[l] >> shift) & 0x0f) + ((qh[l] & u) ? 16 : 0);
        y[l] = MulSub(d1, static_cast<float>(q), m1);
      }
    }
  } else if constexpr (T == GgmlType::kQ6_K) {
    const float d = LoadHalf(x + 208);
    const int half = j / 4, quarter = j % 4;
    const uint8_t* ql = x + 64 * half + (quarter % 2) * 32;
    const uint8_t* qh = x + 128 + 32 * half;
    const uint8_t* sc = x + 192 + 8 * half + 2 * quarter;
    const int shift = (quarter / 2) * 4;
    for (int l = 0; l < 32; ++l) {
      const int q = (((ql[l] >> shift) & 0x0f) | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
      const float s = static_cast<float>(static_cast<int8_t>(sc[l / 16]));
      y[l] = __fmul_rn(__fmul_rn(d, s), static_cast<float>(q));
    }
  }
}

template <GgmlType T>
__global__ void QuantKernel(const uint8_t* src, uint16_t* dst, int64_t groups, int block_bytes,
                            int groups_per_block) {
  for (int64_t g = blockIdx.x * int64_t{kThreads} + threadIdx.x; g < groups;
       g += int64_t{gridDim.x} * kThreads) {
    float y[32];
    DequantizeGroup<T>(src + (g / groups_per_block) * block_bytes,
                       static_cast<int>(g % groups_per_block), y);
    uint32_t w[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) w[i] = ToBf16(y[2 * i]) | (uint32_t{ToBf16(y[2 * i + 1])} << 16);
    auto* out = reinterpret_cast<uint4*>(dst + g * 32);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      out[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
  }
}

template <GgmlType T>
__global__ void PlainKernel(const void* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    if constexpr (T == GgmlType::kF32) {
      dst[i] = ToBf16(static_cast<const float*>(src)[i]);
    } else if constexpr (T == GgmlType::kF16) {
      dst[i] = ToBf16(__half2float(static_cast<const __half*>(src)[i]));
    } else {  // through f32 as the CPU path goes, which quiets NaN
      dst[i] = ToBf16(__uint_as_float(uint32_t{static_cast<const uint16_t*>(src)[i]} << 16));
    }
  }
}

unsigned Blocks(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

template <GgmlType T>
cudaError_t LaunchQuant(const void* src, uint16_t* dst, int64_t elements, int block_elems,
                        int block_bytes, cudaStream_t stream) {
  const int64_t groups = elements / 32;
  QuantKernel<T><<<Blocks(groups), kThreads, 0, stream>>>(static_cast<const uint8_t*>(src), dst,
                                                          groups, block_bytes, block_elems / 32);
  return cudaGetLastError();
}

template <GgmlType T>
cudaError_t LaunchPlain(const void* src, uint16_t* dst, int64_t elements, cudaStream_t stream) {
  PlainKernel<T><<<Blocks(elements), kThreads, 0, stream>>>(src, dst, elements);
  return cudaGetLastError();
}

}  // namespace

bool CanDequantizeToBf16(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

cudaError_t DequantizeRowsToBf16(GgmlType type, const void* src, uint16_t* dst, int64_t rows,
                                 int64_t n, cudaStream_t stream) {
  if (!CanDequantizeToBf16(type)) return cudaErrorNotSupported;
  const bool k_quant =
      type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
  const bool plain = type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16;
  const int64_t block = plain ? 1 : k_quant ? 256 : 32;
  if (rows < 0 || n <= 0 || n % block != 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  // Rows are dense in both src and dst, so the batch is one run of elements.
  const int64_t elements = rows * n;
  switch (type) {
    case GgmlType::kF32:
      return LaunchPlain<GgmlType::kF32>(src, dst, elements, stream);
    case GgmlType::kF16:
      return LaunchPlain<GgmlType::kF16>(src, dst, elements, stream);
    case GgmlType::kBF16:
      return LaunchPlain<GgmlType::kBF16>(src, dst, elements, stream);
    case GgmlType::kQ4_0:
      return LaunchQuant<GgmlType::kQ4_0>(src, dst, elements, 32, 18, stream);
    case GgmlType::kQ4_1:
      return LaunchQuant<GgmlType::kQ4_1>(src, dst, elements, 32, 20, stream);
    case GgmlType::kQ5_0:
      return LaunchQuant<GgmlType::kQ5_0>(src, dst, elements, 32, 22, stream);
    case GgmlType::kQ5_1:
      return LaunchQuant<GgmlType::kQ5_1>(src, dst, elements, 32, 24, stream);
    case GgmlType::kQ8_0:
      return LaunchQuant<GgmlType::kQ8_0>(src, dst, elements, 32, 34, stream);
    case GgmlType::kQ4_K:
      return LaunchQuant<GgmlType::kQ4_K>(src, dst, elements, 256, 144, stream);
    case GgmlType::kQ5_K:
      return LaunchQuant<GgmlType::kQ5_K>(src, dst, elements, 256, 176, stream);
    case GgmlType::kQ6_K:
      return LaunchQuant<GgmlType::kQ6_K>(src, dst, elements, 256, 210, stream);
    default:
      return cudaErrorNotSupported;
  }
}

}  // namespace headwise::kernels::cuda
