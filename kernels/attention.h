// Partial attention over a list of KV blocks, returning (o, lse) so partials
// over disjoint block sets combine exactly with LseMerge (kernels/lse.h). One
// call serves decode (one query row) and prefill chunks (many rows, causal
// within the chunk's own KV); GQA query heads sharing a kv head read its KV once.
#pragma once

#include <cstdint>

#include "kernels/ops.h"  // KvDtype
#include "kernels/parallel.h"

namespace headwise::kernels {

// Up to this many tokens of one (layer, kv head): K and V are each
// [n_tokens x head_dim], row-major and dense, in the call's KvDtype. Token t
// has absolute position first_pos + t. A block with n_tokens == 0 is skipped
// (and its pointers are not read), so it can pad a head's block list.
struct KvBlockView {
  const void* k = nullptr;
  const void* v = nullptr;
  int32_t n_tokens = 0;
  int32_t first_pos = 0;
};

// One call covers n_kv_heads consecutive kv heads. Query head j of kv head h is
// overall head h * group_size + j (the llama GQA mapping). Indexing:
//   q:   q[r * q_row_stride + (h * group_size + j) * head_dim + d]
//   o:   o[r * o_row_stride + (h * group_size + j) * head_dim + d]
//   lse: lse[r * lse_row_stride + h * group_size + j]
//   blocks of kv head h: blocks[h * n_blocks .. (h + 1) * n_blocks)
// A stride of 0 means dense (n_kv_heads * group_size * head_dim for q and o,
// n_kv_heads * group_size for lse). To pass one kv head of a model whose q has
// n_heads heads, point q/o/lse at that head's first q head and set the row
// strides to n_heads * head_dim (q, o) and n_heads (lse).
struct PartialAttentionArgs {
  int32_t head_dim = 0;    // 1..kMaxHeadDim
  int32_t group_size = 1;  // q heads per kv head (n_heads / n_kv_heads), >= 1
  int32_t n_kv_heads = 1;  // >= 1
  int64_t n_rows = 0;      // query rows (tokens); 0 does nothing

  const float* q = nullptr;  // already RoPE'd, unscaled
  int64_t q_row_stride = 0;
  // Absolute position of each row: [n_rows]. Read only when causal.
  const int32_t* q_pos = nullptr;

  KvDtype kv_dtype = KvDtype::kF32;
  const KvBlockView* blocks = nullptr;  // n_kv_heads * n_blocks entries, head-major
  int32_t n_blocks = 0;                 // blocks per kv head; 0 is an empty set

  float scale = 0.0f;  // score = scale * dot(q, k); normally 1/sqrt(head_dim)
  // Mask keys whose position > the row's q_pos. Masked keys' V must still be
  // finite: rows sharing a task add 0 * v for keys only others see.
  bool causal = false;

  float* o = nullptr;  // normalised by this call's own softmax denominator
  int64_t o_row_stride = 0;
  float* lse = nullptr;  // natural log of sum(exp(score)) over unmasked keys
  int64_t lse_row_stride = 0;

  // Runs the (kv head, query tile) tasks; nullptr runs them on this thread.
  const ParallelFor* parallel = nullptr;
};

inline constexpr int32_t kMaxHeadDim = 256;

// The checks every backend shares: shapes, strides, pointers and dtype, but
// not the blocks' contents (a GPU backend's blocks are not readable on the
// host). nullptr when consistent, else a static message naming the problem.
inline const char* PartialAttentionShapeError(const PartialAttentionArgs& a) {
  if (a.head_dim < 1 || a.head_dim > kMaxHeadDim) return "head_dim out of range [1, 256]";
  if (a.group_size < 1) return "group_size < 1";
  if (a.n_kv_heads < 1) return "n_kv_heads < 1";
  if (a.n_rows < 0) return "n_rows < 0";
  if (a.n_blocks < 0) return "n_blocks < 0";
  if (a.n_rows == 0) return nullptr;
  if (a.q == nullptr || a.o == nullptr || a.lse == nullptr) return "q, o or lse is null";
  if (a.causal && a.q_pos == nullptr) return "causal without q_pos";
  if (a.n_blocks > 0 && a.blocks == nullptr) return "blocks is null";
  const int64_t heads = static_cast<int64_t>(a.n_kv_heads) * a.group_size;
  if (a.q_row_stride != 0 && a.q_row_stride < heads * a.head_dim) return "q_row_stride too small";
  if (a.o_row_stride != 0 && a.o_row_stride < heads * a.head_dim) return "o_row_stride too small";
  if (a.lse_row_stride != 0 && a.lse_row_stride < heads) return "lse_row_stride too small";
  if (a.kv_dtype != KvDtype::kF32 && a.kv_dtype != KvDtype::kF16 && a.kv_dtype != KvDtype::kBF16) {
    return "unknown kv_dtype";
  }
  return nullptr;
}

// PartialAttentionShapeError plus the blocks' contents (host-readable views).
const char* PartialAttentionArgsError(const PartialAttentionArgs& args);

// Computes, for every (row, q head), softmax attention over the unmasked keys
// of its kv head's blocks: o = sum(p_t * v_t) / sum(p_t), lse = log(sum(p_t))
// with p_t = exp(score_t), scores accumulated in f32 (KV converted on load),
// with a running max per row. A row whose keys are all masked (or whose kv
// head has no tokens) gets o = 0, lse = -inf. Writes only o and lse (which
// must not overlap q or the KV). Returns false, writing nothing, when
// PartialAttentionArgsError reports a problem. NaN in q or the KV gives NaN
// in the affected outputs. Results do not depend on the ParallelFor or on the
// strides: every (row, q head) is computed by one task in a fixed order. Each
// task uses about 100 KiB of stack.
bool PartialAttention(const PartialAttentionArgs& args);

}  // namespace headwise::kernels
