// CPU partial attention (kernels/attention.h). Work is split into tasks of
// (kv head, tile of up to kTile consecutive (row, q head) queries); a task walks
// its kv head's blocks in chunks of kChunk tokens, converting f16/bf16 KV to f32
// once per chunk for all queries of the tile, with an online softmax per query.
// Inner loops are 8-wide blocks / fixed trip counts so GCC vectorises them at -O2.
#include "kernels/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <type_traits>

namespace headwise::kernels {
namespace {

constexpr int kTile = 16;   // queries per task
constexpr int kChunk = 32;  // keys per online-softmax step

// exp(x) for x <= 0, ~1 ulp (Cephes expf polynomial); exactly 0 for x < -87
// (and -inf); NaN stays NaN. The clamp is done on the bits, without branches
// or float compares, so GCC vectorises loops over it at -O2 (it will not
// if-convert float ops that might trap).
inline float ExpNonPositive(float x) {
  const uint32_t xb = std::bit_cast<uint32_t>(x);
  // Negative and ordered below -87 <=> bits in [bits(-87) + 1, bits(-inf)].
  const uint32_t keep = 0u - static_cast<uint32_t>(xb - 0xc2ae0001u > 0x3cd1ffffu);
  const float xc = std::bit_cast<float>((xb & keep) | (0xc2ae0000u & ~keep));
  const float t = xc * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23 rounds to an integer
  const float n = t - 12582912.0f;
  const int32_t ni = std::bit_cast<int32_t>(t) - 0x4b400000;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float pow2n = std::bit_cast<float>(static_cast<uint32_t>(ni + 127) << 23);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * pow2n) & keep);
}

inline void Scale(float* y, float a, int n) {
  for (int d = 0; d < n; ++d) y[d] *= a;
}

// Returns rows [0, n) of a block's K or V as f32: in place for f32, else
// converted into buf.
const float* LoadRows(KvDtype dtype, const void* base, int64_t first, int n, int head_dim,
                      float* buf) {
  const int64_t offset = first * head_dim;
  if (dtype == KvDtype::kF32) return static_cast<const float*>(base) + offset;
  const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
  const int count = n * head_dim;
  // Blocks of 8 with a constant inner trip count vectorise under -O2's cost model.
  int i = 0;
  if (dtype == KvDtype::kF16) {
    for (; i + 8 <= count; i += 8) {
      for (int j = 0; j < 8; ++j) buf[i + j] = F16ToF32(src[i + j]);
    }
    for (; i < count; ++i) buf[i] = F16ToF32(src[i]);
  } else {
    for (; i + 8 <= count; i += 8) {
      for (int j = 0; j < 8; ++j) buf[i + j] = Bf16ToF32(src[i + j]);
    }
    for (; i < count; ++i) buf[i] = Bf16ToF32(src[i]);
  }
  return buf;
}

// Online-softmax state of one task's queries.
struct TileState {
  int n = 0;                                  // queries in the tile
  alignas(64) float q[kTile][kMaxHeadDim];    // scaled queries
  alignas(64) float acc[kTile][kMaxHeadDim];  // unnormalised sum of p * v
  float m[kTile];                             // running max score
  float l[kTile];                             // running sum of exp(score - m)
  int32_t pos[kTile];                         // query positions (causal only)
  int64_t row[kTile];
  int32_t head[kTile];  // q head within the call
};

// Dot products of N queries with keys [0, n) of a chunk (rows of head_dim),
// into s[i][t]. Each 8-float slice of a key is loaded once for all N queries.
// A query's scores do not depend on N or on the other queries.
template <int N>
void ScoreKeys(const float* const* q, const float* __restrict k, int n, int head_dim,
               float* const* s) {
  for (int t = 0; t < n; ++t) {
    const float* kt = k + t * head_dim;
    float a[N][8] = {};
    int d0 = 0;
    for (; d0 + 8 <= head_dim; d0 += 8) {
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) {
        for (int j = 0; j < 8; ++j) a[i][j] += q[i][d0 + j] * kt[d0 + j];
      }
    }
    for (int i = 0; i < N; ++i) {
      float tail = 0.0f;
      for (int d = d0; d < head_dim; ++d) tail += q[i][d] * kt[d];
      s[i][t] = (((a[i][0] + a[i][4]) + (a[i][1] + a[i][5])) +
                 ((a[i][2] + a[i][6]) + (a[i][3] + a[i][7]))) +
                tail;
    }
  }
}

// Folds a chunk's scores s[0, valid) (s is kChunk long; the rest is
// overwritten) into query i: updates its running max and sum, rescales its acc
// when the max grows, and writes the keys' weights p[t] = exp(s[t] - m) for
// t < kChunk (0 past valid). Returns false when the chunk adds nothing.
bool SoftmaxChunk(TileState& st, int i, float* s, int valid, int head_dim, float* p) {
  for (int t = valid; t < kChunk; ++t) s[t] = -INFINITY;
  float cmax = s[0];
  for (int t = 1; t < valid; ++t) cmax = s[t] > cmax ? s[t] : cmax;
  if (cmax > st.m[i]) {
    const float corr = ExpNonPositive(st.m[i] - cmax);  // 0 when m was -inf
    st.l[i] *= corr;
    Scale(st.acc[i], corr, head_dim);
    st.m[i] = cmax;
  } else if (cmax == -INFINITY) {
    return false;  // every score -inf (only with infinite inputs)
  }
  const float m = st.m[i];
  for (int t = 0; t < kChunk; ++t) p[t] = ExpNonPositive(s[t] - m);
  float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int t = 0; t < kChunk; t += 8) {
    for (int j = 0; j < 8; ++j) sums[j] += p[t + j];
  }
  st.l[i] +=
      ((sums[0] + sums[4]) + (sums[1] + sums[5])) + ((sums[2] + sums[6]) + (sums[3] + sums[7]));
  return true;
}

// acc[i] += sum over t < n of p[i][t] * v[t] for N queries at once: each
// 8-float slice of a V row is loaded once for all N, and the N x 8
// accumulators stay in registers over the chunk.
template <int N>
void AccumulateValues(float* const* acc, const float* const* p, const float* __restrict v, int n,
                      int head_dim) {
  int d0 = 0;
  for (; d0 + 8 <= head_dim; d0 += 8) {
    float a[N][8];
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      for (int j = 0; j < 8; ++j) a[i][j] = acc[i][d0 + j];
    }
    for (int t = 0; t < n; ++t) {
      const float* vt = v + t * head_dim + d0;
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) {
        const float pi = p[i][t];
        for (int j = 0; j < 8; ++j) a[i][j] += pi * vt[j];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      for (int j = 0; j < 8; ++j) acc[i][d0 + j] = a[i][j];
    }
  }
  for (int i = 0; i < N; ++i) {
    for (int d = d0; d < head_dim; ++d) {
      float x = acc[i][d];
      for (int t = 0; t < n; ++t) x += p[i][t] * v[t * head_dim + d];
      acc[i][d] = x;
    }
  }
}

// Calls f(std::integral_constant<int, n>) for n in 1..4.
template <typename F>
void ForGroupSize(int n, F&& f) {
  switch (n) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    default:
      return f(std::integral_constant<int, 4>{});
  }
}

void RunTile(const PartialAttentionArgs& a, int32_t kv_head, int64_t first_query,
             int64_t n_queries) {
  const int hd = a.head_dim;
  const int64_t q_stride =
      a.q_row_stride != 0 ? a.q_row_stride : static_cast<int64_t>(a.n_kv_heads) * a.group_size * hd;
  TileState st;
  st.n = static_cast<int>(n_queries);
  int32_t max_pos = INT32_MIN;
  for (int i = 0; i < st.n; ++i) {
    const int64_t query = first_query + i;
    st.row[i] = query / a.group_size;
    st.head[i] = kv_head * a.group_size + static_cast<int32_t>(query % a.group_size);
    const float* q = a.q + st.row[i] * q_stride + static_cast<int64_t>(st.head[i]) * hd;
    for (int d = 0; d < hd; ++d) st.q[i][d] = q[d] * a.scale;
    for (int d = 0; d < hd; ++d) st.acc[i][d] = 0.0f;
    st.m[i] = -INFINITY;
    st.l[i] = 0.0f;
    st.pos[i] = a.causal ? a.q_pos[st.row[i]] : INT32_MAX;
    max_pos = std::max(max_pos, st.pos[i]);
  }

  alignas(64) float kbuf[kChunk * kMaxHeadDim];
  alignas(64) float vbuf[kChunk * kMaxHeadDim];
  // Per chunk: the queries that see it (seen_*) and their scores s; the
  // queries it adds to, with their weights p and acc rows.
  int seen[kTile], seen_valid[kTile];
  const float* seen_q[kTile];
  alignas(64) float s[kTile][kChunk];
  alignas(64) float p[kTile][kChunk];
  float* s_rows[kTile];
  const float* p_rows[kTile];
  for (int i = 0; i < kTile; ++i) s_rows[i] = s[i], p_rows[i] = p[i];
  float* acc[kTile];
  const KvBlockView* blocks = a.blocks + static_cast<int64_t>(kv_head) * a.n_blocks;
  for (int32_t b = 0; b < a.n_blocks; ++b) {
    const KvBlockView& blk = blocks[b];
    for (int32_t c0 = 0; c0 < blk.n_tokens; c0 += kChunk) {
      const int64_t chunk_pos = static_cast<int64_t>(blk.first_pos) + c0;
      if (chunk_pos > max_pos) break;  // causal: this and later chunks are masked
      const int cn = std::min(kChunk, blk.n_tokens - c0);
      const float* k = LoadRows(a.kv_dtype, blk.k, c0, cn, hd, kbuf);
      const float* v = LoadRows(a.kv_dtype, blk.v, c0, cn, hd, vbuf);
      // Queries that see some of the chunk, and how many of its keys.
      int n_seen = 0;
      for (int i = 0; i < st.n; ++i) {
        const int64_t visible = static_cast<int64_t>(st.pos[i]) - chunk_pos + 1;
        const int valid = static_cast<int>(std::clamp<int64_t>(visible, 0, cn));
        if (valid == 0) continue;
        seen[n_seen] = i;
        seen_valid[n_seen] = valid;
        seen_q[n_seen] = st.q[i];
        ++n_seen;
      }
      for (int i0 = 0; i0 < n_seen; i0 += 4) {
        const int group = std::min(4, n_seen - i0);
        const int n_keys = *std::max_element(seen_valid + i0, seen_valid + i0 + group);
        ForGroupSize(group, [&](auto n) {
          ScoreKeys<decltype(n)::value>(seen_q + i0, k, n_keys, hd, s_rows + i0);
        });
      }
      // Online softmax per query, then values for those the chunk adds to.
      int n_active = 0;
      for (int j = 0; j < n_seen; ++j) {
        const int i = seen[j];
        if (SoftmaxChunk(st, i, s[j], seen_valid[j], hd, p[n_active])) {
          acc[n_active] = st.acc[i];
          ++n_active;
        }
      }
      for (int i0 = 0; i0 < n_active; i0 += 4) {
        ForGroupSize(std::min(4, n_active - i0), [&](auto n) {
          AccumulateValues<decltype(n)::value>(acc + i0, p_rows + i0, v, cn, hd);
        });
      }
    }
  }

  const int64_t o_stride =
      a.o_row_stride != 0 ? a.o_row_stride : static_cast<int64_t>(a.n_kv_heads) * a.group_size * hd;
  const int64_t lse_stride =
      a.lse_row_stride != 0 ? a.lse_row_stride : static_cast<int64_t>(a.n_kv_heads) * a.group_size;
  for (int i = 0; i < st.n; ++i) {
    float* o = a.o + st.row[i] * o_stride + static_cast<int64_t>(st.head[i]) * hd;
    float* lse = a.lse + st.row[i] * lse_stride + st.head[i];
    if (st.l[i] != 0.0f) {  // NaN from NaN inputs propagates rather than reading as empty
      const float inv = 1.0f / st.l[i];
      for (int d = 0; d < hd; ++d) o[d] = st.acc[i][d] * inv;
      *lse = st.m[i] + std::log(st.l[i]);
    } else {
      for (int d = 0; d < hd; ++d) o[d] = 0.0f;
      *lse = -INFINITY;
    }
  }
}

}  // namespace

const char* PartialAttentionArgsError(const PartialAttentionArgs& a) {
  if (const char* error = PartialAttentionShapeError(a)) return error;
  if (a.n_rows == 0) return nullptr;
  for (int64_t b = 0; b < static_cast<int64_t>(a.n_kv_heads) * a.n_blocks; ++b) {
    const KvBlockView& blk = a.blocks[b];
    if (blk.n_tokens < 0) return "block with n_tokens < 0";
    if (blk.n_tokens > 0 && (blk.k == nullptr || blk.v == nullptr)) return "block k or v is null";
    if (static_cast<int64_t>(blk.first_pos) + blk.n_tokens - 1 > INT32_MAX) {
      return "block positions overflow int32";
    }
  }
  return nullptr;
}

bool PartialAttention(const PartialAttentionArgs& a) {
  if (PartialAttentionArgsError(a) != nullptr) return false;
  if (a.n_rows == 0) return true;
  const int64_t queries = a.n_rows * a.group_size;  // per kv head
  const int64_t tiles = (queries + kTile - 1) / kTile;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const auto kv_head = static_cast<int32_t>(task / tiles);
      const int64_t first = (task % tiles) * kTile;
      RunTile(a, kv_head, first, std::min<int64_t>(kTile, queries - first));
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(a.n_kv_heads) * tiles;
  if (a.parallel != nullptr) {
    a.parallel->Run(n_tasks, run);
  } else {
    run(0, n_tasks);
  }
  return true;
}

}  // namespace headwise::kernels
