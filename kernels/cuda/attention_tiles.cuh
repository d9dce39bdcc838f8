// Building blocks of the split-KV attention kernel (kernels/cuda/attention.cu),
// kept apart so each file reads in one sitting: the chunk geometry, KV
// conversion, the cp.async helpers, the walk over a kv head's blocks that
// deals chunks out to splits, and the (swizzled) shared-memory tile loader.
// Device code only; included by attention.cu alone.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/attention.h"

namespace headwise::kernels::cuda::attention_detail {

constexpr int kThreads = 128;
constexpr int kStages = 3;
constexpr int kStageKBytes = 16384;  // K bytes (and V bytes) of one chunk
constexpr int kMaxQueries = 8;       // queries per CTA
constexpr int kMaxSplits = 128;

template <KvDtype D, int HD>
struct Geometry {
  static constexpr int kElemBytes = D == KvDtype::kF32 ? 4 : 2;
  static constexpr int kVec = 16 / kElemBytes;                 // elements per 16-byte vector
  static constexpr int kNv = HD / kVec;                        // vectors per row
  static constexpr int kT = kStageKBytes / (HD * kElemBytes);  // tokens per chunk
  static constexpr int kDs = kThreads / kT;                    // score threads per token
  static constexpr int kNtg = kThreads / kNv;                  // token groups in P*V
  static constexpr int kStageVecs = 2 * kT * kNv;              // K then V
  static_assert(kNv * kT == 1024 && kNv >= 8 && kDs >= 1, "each thread owns 8 vectors");
};

template <KvDtype D, int HD, int QT>
constexpr size_t SmemBytes() {
  using G = Geometry<D, HD>;
  return kStages * G::kStageVecs * 16 + sizeof(float) * (QT * HD + 2 * QT * G::kT + 3 * QT);
}

// 16 bytes of KV as floats, element order kept.
template <KvDtype D>
__device__ __forceinline__ void ToFloat(const uint4& r, float* f) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (D == KvDtype::kF32) {
      f[i] = __uint_as_float(w[i]);
    } else if constexpr (D == KvDtype::kBF16) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    } else {
      f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
    }
  }
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ float WarpMax(float x) {
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
__device__ __forceinline__ float WarpSum(float x) {
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

struct Params {
  const float* q;
  int64_t q_stride;
  const int32_t* q_pos;
  const KvBlockView* blocks;
  int32_t n_blocks;
  float* o;
  int64_t o_stride;
  float* lse;
  int64_t lse_stride;
  float* part_o;    // [splits][n_kv][n_q][head_dim] when n_splits > 1
  float* part_lse;  // [splits][n_kv][n_q]
  int32_t head_dim, group, n_kv;
  int64_t n_q;  // queries per kv head: n_rows * group
  int32_t n_splits;
  float scale;
  bool causal;
};

// A run of up to T tokens of one block; k/v point at its first row.
struct Chunk {
  const unsigned char* k;
  const unsigned char* v;
  int valid;  // tokens, 0 = none
  int pos;    // absolute position of the first token
  bool fast;  // cp.async path: full-width rows, 16-byte aligned
};

// Block-view fields the iterator needs, loaded one block ahead of use.
struct ViewRegs {
  const unsigned char* k = nullptr;
  const unsigned char* v = nullptr;
  int64_t n_tokens = 0, first_pos = 0;
  __device__ void Load(const KvBlockView& b) {
    k = static_cast<const unsigned char*>(b.k);
    v = static_cast<const unsigned char*>(b.v);
    n_tokens = b.n_tokens;
    first_pos = b.first_pos;
  }
};

// Walks one kv head's blocks in order from chunk `chunk` of block `block`,
// yielding up to `count` chunks (masked chunks count but are not yielded:
// chunks whose first position is past max_pos, which every query masks). The
// next block's view is loaded while the current one's chunks stream, so the
// walk does not stall on a dependent load per chunk.
class ChunkIter {
 public:
  __device__ ChunkIter(const KvBlockView* blocks, int n_blocks, int chunk_tokens, int max_pos,
                       int row_bytes, bool full_rows, int block, int64_t chunk, int64_t count)
      : blocks_(blocks),
        n_blocks_(n_blocks),
        t_(chunk_tokens),
        max_pos_(max_pos),
        row_bytes_(row_bytes),
        full_rows_(full_rows),
        b_(block),
        c_(chunk),
        left_(count) {
    if (b_ < n_blocks_) next_.Load(blocks_[b_]);
  }

  __device__ bool Next(Chunk* c) {
    while (left_ > 0 && b_ < n_blocks_) {
      if (!open_) {
        cur_ = next_;
        if (b_ + 1 < n_blocks_) next_.Load(blocks_[b_ + 1]);
        n_chunks_ = cur_.n_tokens > 0 ? (cur_.n_tokens + t_ - 1) / t_ : 0;
        open_ = true;
      }
      if (c_ < n_chunks_) {
        const int64_t first = c_ * t_;
        if (cur_.first_pos + first <= max_pos_) {
          c->k = cur_.k + first * row_bytes_;
          c->v = cur_.v + first * row_bytes_;
          c->valid = static_cast<int>(min(static_cast<int64_t>(t_), cur_.n_tokens - first));
          c->pos = static_cast<int>(cur_.first_pos + first);
          c->fast = full_rows_ &&
                    ((reinterpret_cast<uintptr_t>(cur_.k) | reinterpret_cast<uintptr_t>(cur_.v)) &
                     15u) == 0;
          ++c_;
          --left_;
          return true;
        }
        // Positions grow within a block: the rest of it is masked too.
        left_ -= n_chunks_ - c_;
        c_ = n_chunks_;
        continue;
      }
      ++b_;
      c_ = 0;
      open_ = false;
    }
    return false;
  }

 private:
  const KvBlockView* blocks_;
  int n_blocks_, t_, max_pos_, row_bytes_;
  bool full_rows_;
  int b_;
  int64_t c_, left_;
  int64_t n_chunks_ = 0;
  ViewRegs cur_, next_;
  bool open_ = false;
};

// The contiguous chunk range [split * G / splits, (split + 1) * G / splits) of
// a kv head's G chunks, as (first block, chunk within it, count). All threads
// of the CTA call it; `scratch` is >= 64 bytes of shared memory.
struct SplitRange {
  int block;
  int64_t chunk, count;
};

__device__ inline SplitRange FindSplitRange(const KvBlockView* blocks, int n_blocks, int t,
                                            int splits, int split, int tid, void* scratch) {
  auto* warp_sums = static_cast<int64_t*>(scratch);  // [4], then the answer
  auto* answer = reinterpret_cast<int64_t*>(warp_sums + 4);
  // Thread tid sums the chunks of blocks [b_lo, b_hi).
  const int b_lo = static_cast<int>(int64_t{n_blocks} * tid / kThreads);
  const int b_hi = static_cast<int>(int64_t{n_blocks} * (tid + 1) / kThreads);
  int64_t mine = 0;
#pragma unroll 4
  for (int b = b_lo; b < b_hi; ++b) {
    const int64_t n = blocks[b].n_tokens;
    mine += n > 0 ? (n + t - 1) / t : 0;
  }
  // Exclusive scan over the 128 threads.
  const int lane = tid % 32, warp = tid / 32;
  int64_t incl = mine;
  for (int off = 1; off < 32; off *= 2) {
    const int64_t up = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += up;
  }
  if (lane == 31) warp_sums[warp] = incl;
  if (tid == 0) answer[0] = n_blocks, answer[1] = 0;
  __syncthreads();
  int64_t before = incl - mine, total = 0;
  for (int w = 0; w < kThreads / 32; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  const int64_t g_begin = total * split / splits, g_end = total * (split + 1) / splits;
  if (g_begin < g_end && before <= g_begin && g_begin < before + mine) {
    int64_t g = before;
    for (int b = b_lo; b < b_hi; ++b) {
      const int64_t n = blocks[b].n_tokens;
      const int64_t chunks = n > 0 ? (n + t - 1) / t : 0;
      if (g_begin < g + chunks) {
        answer[0] = b;
        answer[1] = g_begin - g;
        break;
      }
      g += chunks;
    }
  }
  __syncthreads();
  SplitRange r{static_cast<int>(answer[0]), answer[1], g_end - g_begin};
  __syncthreads();  // scratch is reused by the caller
  return r;
}

// Stage layout: vector (t, v) of K at stage[t * kNv + (v ^ (t & 7))], V after K.
template <KvDtype D, int HD>
__device__ void LoadChunk(const Chunk& c, uint4* stage, int head_dim, int tid) {
  using G = Geometry<D, HD>;
  uint4* ks = stage;
  uint4* vs = stage + G::kT * G::kNv;
  if (c.fast) {
    const auto* kg = reinterpret_cast<const uint4*>(c.k);
    const auto* vg = reinterpret_cast<const uint4*>(c.v);
    for (int idx = tid; idx < c.valid * G::kNv; idx += kThreads) {
      const int t = idx / G::kNv, v = idx % G::kNv;
      const int s = t * G::kNv + (v ^ (t & 7));
      CpAsync16(ks + s, kg + idx);
      CpAsync16(vs + s, vg + idx);
    }
    return;
  }
  using Elem = std::conditional_t<D == KvDtype::kF32, float, uint16_t>;
  const auto* kg = reinterpret_cast<const Elem*>(c.k);
  const auto* vg = reinterpret_cast<const Elem*>(c.v);
  for (int idx = tid; idx < c.valid * HD; idx += kThreads) {
    const int t = idx / HD, d = idx % HD;
    Elem kx{}, vx{};
    if (d < head_dim) {
      kx = kg[static_cast<int64_t>(t) * head_dim + d];
      vx = vg[static_cast<int64_t>(t) * head_dim + d];
    }
    const int s = t * G::kNv + ((d / G::kVec) ^ (t & 7));
    reinterpret_cast<Elem*>(ks + s)[d % G::kVec] = kx;
    reinterpret_cast<Elem*>(vs + s)[d % G::kVec] = vx;
  }
}

}  // namespace headwise::kernels::cuda::attention_detail
