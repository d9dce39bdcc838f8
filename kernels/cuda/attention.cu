// Split-KV partial attention (kernels/cuda/attention.cuh). One kernel serves
// decode and prefill: a CTA of 128 threads owns (kv head, tile of QT <= 8
// queries, split s of S) and streams the s-th contiguous S-th of the kv head's
// chunks through a 3-stage cp.async pipeline of T-token K/V tiles (16 KiB each of K
// and V; 16-byte vectors XOR-swizzled by row so neither copies nor reads
// conflict on banks). Per chunk: scores (thread = token x 8-vector slice),
// online softmax (warp = query), P*V (thread = 16-byte dim vector x token
// group). The split partials are merged by log-sum-exp in a second kernel,
// launched as a programmatic dependent (PDL) so its launch overlaps the tail.
#include <math_constants.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tiles.cuh"

namespace headwise::kernels::cuda {
namespace {

using attention_detail::Chunk;
using attention_detail::ChunkIter;
using attention_detail::CpAsyncCommit;
using attention_detail::CpAsyncWait;
using attention_detail::FindSplitRange;
using attention_detail::Geometry;
using attention_detail::kMaxQueries;
using attention_detail::kMaxSplits;
using attention_detail::kStages;
using attention_detail::kThreads;
using attention_detail::LoadChunk;
using attention_detail::Params;
using attention_detail::SmemBytes;
using attention_detail::SplitRange;
using attention_detail::ToFloat;
using attention_detail::WarpMax;
using attention_detail::WarpSum;

template <KvDtype D, int HD, int QT>
__global__ void __launch_bounds__(kThreads, 2) SplitKvKernel(const Params p) {
  using G = Geometry<D, HD>;
  constexpr int kT = G::kT, kVec = G::kVec, kNv = G::kNv;
  constexpr int kWarpQueries = (QT + 3) / 4;  // softmax queries per warp
  extern __shared__ __align__(16) unsigned char smem[];
  auto* stages = reinterpret_cast<uint4*>(smem);
  auto* q_s = reinterpret_cast<float*>(smem + kStages * G::kStageVecs * 16);  // [QT][HD], scaled
  float* s_s = q_s + QT * HD;                                                 // [QT][kT] scores
  float* p_s = s_s + QT * kT;                                                 // [QT][kT] weights
  float* corr_s = p_s + QT * kT;
  float* m_s = corr_s + QT;
  float* l_s = m_s + QT;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int split = static_cast<int>(blockIdx.x % p.n_splits);
  const int64_t tile = blockIdx.x / p.n_splits;
  const int kv_head = blockIdx.y;

  // Queries and positions go to registers first: their loads overlap the
  // split search and the first KV copies; q reaches shared memory before the
  // main loop's first barrier.
  constexpr int kQPerThread = (QT * HD + kThreads - 1) / kThreads;
  float q_reg[kQPerThread];
#pragma unroll
  for (int i = 0; i < kQPerThread; ++i) {
    const int idx = tid + i * kThreads, qi = idx / HD, d = idx % HD;
    const int64_t query = tile * QT + qi;
    q_reg[i] = 0.0f;
    if (idx < QT * HD && query < p.n_q && d < p.head_dim) {
      const int64_t head = static_cast<int64_t>(kv_head) * p.group + query % p.group;
      q_reg[i] = p.q[(query / p.group) * p.q_stride + head * p.head_dim + d] * p.scale;
    }
  }
  int qpos[QT];  // INT_MIN for tile slots past the last query: they see nothing
  int max_pos = INT_MIN;
#pragma unroll
  for (int qi = 0; qi < QT; ++qi) {
    const int64_t query = tile * QT + qi;
    qpos[qi] = query >= p.n_q ? INT_MIN : p.causal ? p.q_pos[query / p.group] : INT_MAX;
    max_pos = max(max_pos, qpos[qi]);
  }

  SplitRange range{0, 0, INT64_MAX};
  if (p.n_splits > 1) {
    range = FindSplitRange(p.blocks + static_cast<int64_t>(kv_head) * p.n_blocks, p.n_blocks, kT,
                           p.n_splits, split, tid, smem);
  }
  ChunkIter iter(p.blocks + static_cast<int64_t>(kv_head) * p.n_blocks, p.n_blocks, kT, max_pos,
                 p.head_dim * G::kElemBytes, p.head_dim == HD, range.block, range.chunk,
                 range.count);
  float m[kWarpQueries], l[kWarpQueries];
#pragma unroll
  for (int j = 0; j < kWarpQueries; ++j) m[j] = -CUDART_INF_F, l[j] = 0.0f;
  float acc[QT][kVec] = {};
  const int dv = tid % kNv, tg = tid / kNv;        // P*V role
  const int st = tid / G::kDs, sl = tid % G::kDs;  // score role

  Chunk queue[kStages - 1];  // chunks in flight, oldest first
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    queue[i].valid = 0;
    if (iter.Next(&queue[i]))
      LoadChunk<D, HD>(queue[i], stages + i * G::kStageVecs, p.head_dim, tid);
    CpAsyncCommit();
  }
#pragma unroll
  for (int i = 0; i < kQPerThread; ++i) {
    if (tid + i * kThreads < QT * HD) q_s[tid + i * kThreads] = q_reg[i];
  }
  for (int stage = 0; queue[0].valid > 0; stage = (stage + 1) % kStages) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // chunk `stage` landed; everyone is done with the previous stage
    Chunk next;
    next.valid = 0;
    if (iter.Next(&next)) {
      LoadChunk<D, HD>(next, stages + ((stage + kStages - 1) % kStages) * G::kStageVecs, p.head_dim,
                       tid);
    }
    CpAsyncCommit();
    const Chunk& c = queue[0];
    const uint4* ks = stages + stage * G::kStageVecs;
    const uint4* vs = ks + kT * kNv;

    // Scores: token st, vectors [8 sl, 8 sl + 8), rotated so the lanes of a token differ in bank.
    float dot[QT] = {};
    if (st < c.valid) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int v = sl * 8 + ((i + sl * (8 / G::kDs)) & 7);
        float kf[kVec];
        ToFloat<D>(ks[st * kNv + (v ^ (st & 7))], kf);
#pragma unroll
        for (int qi = 0; qi < QT; ++qi) {
          const auto* qv = reinterpret_cast<const float4*>(q_s + qi * HD + v * kVec);
#pragma unroll
          for (int e = 0; e < kVec / 4; ++e) {
            const float4 x = qv[e];
            dot[qi] +=
                x.x * kf[4 * e] + x.y * kf[4 * e + 1] + x.z * kf[4 * e + 2] + x.w * kf[4 * e + 3];
          }
        }
      }
    }
#pragma unroll
    for (int off = G::kDs / 2; off > 0; off /= 2) {
#pragma unroll
      for (int qi = 0; qi < QT; ++qi) dot[qi] += __shfl_xor_sync(0xffffffffu, dot[qi], off);
    }
    if (sl == 0) {
      const int64_t key_pos = static_cast<int64_t>(c.pos) + st;
#pragma unroll
      for (int qi = 0; qi < QT; ++qi) {
        s_s[qi * kT + st] = st < c.valid && key_pos <= qpos[qi] ? dot[qi] : -CUDART_INF_F;
      }
    }
    __syncthreads();

    // Online softmax: warp w owns queries w, w + 4.
#pragma unroll
    for (int j = 0; j < kWarpQueries; ++j) {
      const int qi = warp + 4 * j;
      if (qi >= QT) continue;
      float cmax = -CUDART_INF_F;
      for (int t = lane; t < kT; t += 32) cmax = fmaxf(cmax, s_s[qi * kT + t]);
      const float m_new = fmaxf(m[j], WarpMax(cmax));
      float corr = 1.0f, sum = 0.0f;
      if (m_new != -CUDART_INF_F) corr = expf(m[j] - m_new);
      for (int t = lane; t < kT; t += 32) {
        const float w = m_new == -CUDART_INF_F ? 0.0f : expf(s_s[qi * kT + t] - m_new);
        p_s[qi * kT + t] = w;
        sum += w;
      }
      l[j] = l[j] * corr + WarpSum(sum);
      m[j] = m_new;
      if (lane == 0) corr_s[qi] = corr;
    }
    __syncthreads();

    // P*V: dim vector dv, tokens tg, tg + kNtg, ...
#pragma unroll
    for (int qi = 0; qi < QT; ++qi) {
      const float corr = corr_s[qi];
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[qi][e] *= corr;
    }
    for (int t = tg; t < c.valid; t += G::kNtg) {
      float vf[kVec];
      ToFloat<D>(vs[t * kNv + (dv ^ (t & 7))], vf);
#pragma unroll
      for (int qi = 0; qi < QT; ++qi) {
        const float w = p_s[qi * kT + t];
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[qi][e] += w * vf[e];
      }
    }
#pragma unroll
    for (int i = 0; i < kStages - 2; ++i) queue[i] = queue[i + 1];
    queue[kStages - 2] = next;
  }

  // Let the merge kernel launch; it waits for this grid's writes (griddepcontrol.wait).
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
  // Sum the token groups' accumulators through the (now idle) stage memory.
  CpAsyncWait<0>();
  __syncthreads();
  auto* red = reinterpret_cast<float*>(smem);  // [kNtg][QT][HD]
#pragma unroll
  for (int qi = 0; qi < QT; ++qi) {
    auto* dst = reinterpret_cast<float4*>(red + (tg * QT + qi) * HD + dv * kVec);
#pragma unroll
    for (int e = 0; e < kVec / 4; ++e) {
      dst[e] =
          make_float4(acc[qi][4 * e], acc[qi][4 * e + 1], acc[qi][4 * e + 2], acc[qi][4 * e + 3]);
    }
  }
#pragma unroll
  for (int j = 0; j < kWarpQueries; ++j) {
    const int qi = warp + 4 * j;
    if (qi < QT && lane == 0) m_s[qi] = m[j], l_s[qi] = l[j];
  }
  __syncthreads();
  for (int idx = tid; idx < QT * HD; idx += kThreads) {
    const int qi = idx / HD, d = idx % HD;
    const int64_t query = tile * QT + qi;
    if (query >= p.n_q || d >= p.head_dim) continue;
    float sum = 0.0f;
#pragma unroll
    for (int g = 0; g < G::kNtg; ++g) sum += red[(g * QT + qi) * HD + d];
    const float denom = l_s[qi];
    // As the CPU kernel: a NaN denominator propagates rather than reading as empty.
    const float out = denom != 0.0f ? sum * (1.0f / denom) : 0.0f;
    const float lse_out = denom != 0.0f ? m_s[qi] + logf(denom) : -CUDART_INF_F;
    if (p.n_splits == 1) {
      const int64_t row = query / p.group;
      const int64_t head = static_cast<int64_t>(kv_head) * p.group + query % p.group;
      p.o[row * p.o_stride + head * p.head_dim + d] = out;
      if (d == 0) p.lse[row * p.lse_stride + head] = lse_out;
    } else {
      const int64_t slot = (static_cast<int64_t>(split) * p.n_kv + kv_head) * p.n_q + query;
      p.part_o[slot * p.head_dim + d] = out;
      if (d == 0) p.part_lse[slot] = lse_out;
    }
  }
}

// One CTA per (query, kv head): LSE merge of the n_splits partials.
__global__ void MergeSplitsKernel(const Params p) {
  __shared__ float w_s[kMaxSplits];
  __shared__ float lse_sh;
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // the partials are complete
  const int64_t query = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int64_t stride = static_cast<int64_t>(p.n_kv) * p.n_q;  // between splits
  const int64_t slot0 = static_cast<int64_t>(kv_head) * p.n_q + query;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float m = -CUDART_INF_F;
    for (int s = lane; s < p.n_splits; s += 32) m = fmaxf(m, p.part_lse[slot0 + s * stride]);
    m = WarpMax(m);
    float sum = 0.0f;
    for (int s = lane; s < p.n_splits; s += 32) {
      const float e = m == -CUDART_INF_F ? 0.0f : expf(p.part_lse[slot0 + s * stride] - m);
      w_s[s] = e;
      sum += e;
    }
    sum = WarpSum(sum);
    for (int s = lane; s < p.n_splits; s += 32) w_s[s] = sum != 0.0f ? w_s[s] / sum : 0.0f;
    if (lane == 0) lse_sh = m == -CUDART_INF_F ? -CUDART_INF_F : m + logf(sum);
  }
  __syncthreads();
  const int64_t row = query / p.group;
  const int64_t head = static_cast<int64_t>(kv_head) * p.group + query % p.group;
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float out = 0.0f;
#pragma unroll 8
    for (int s = 0; s < p.n_splits; ++s) {
      out += w_s[s] * p.part_o[(slot0 + s * stride) * p.head_dim + d];
    }
    p.o[row * p.o_stride + head * p.head_dim + d] = out;
  }
  if (threadIdx.x == 0) p.lse[row * p.lse_stride + head] = lse_sh;
}

template <KvDtype D, int HD, int QT>
cudaError_t LaunchSplitKv(const Params& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t kSmem = SmemBytes<D, HD, QT>();
  const auto kernel = SplitKvKernel<D, HD, QT>;
  // The shared-memory opt-in is per device; set it once per device (a racing
  // second setter is harmless).
  static std::atomic<uint64_t> configured{0};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if ((configured.load(std::memory_order_relaxed) & bit) == 0 || bit == 0) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int{kSmem});
    if (err != cudaSuccess) return err;
    configured.fetch_or(bit, std::memory_order_relaxed);
  }
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <KvDtype D, int HD>
cudaError_t DispatchQt(int qt, const Params& p, dim3 grid, cudaStream_t stream) {
  switch (qt) {
    case 1:
      return LaunchSplitKv<D, HD, 1>(p, grid, stream);
    case 2:
      return LaunchSplitKv<D, HD, 2>(p, grid, stream);
    case 4:
      return LaunchSplitKv<D, HD, 4>(p, grid, stream);
    default:
      return LaunchSplitKv<D, HD, kMaxQueries>(p, grid, stream);
  }
}

template <KvDtype D>
cudaError_t DispatchHd(int hd, int qt, const Params& p, dim3 grid, cudaStream_t stream) {
  if (hd == 64) return DispatchQt<D, 64>(qt, p, grid, stream);
  if (hd == 128) return DispatchQt<D, 128>(qt, p, grid, stream);
  return DispatchQt<D, 256>(qt, p, grid, stream);
}

struct Plan {
  int64_t n_q = 0, n_tiles = 0;
  int qt = 1, hd = 64, splits = 1;
  size_t split_bytes = 0;  // workspace per split
};

cudaError_t MakePlan(const PartialAttentionArgs& a, Plan* plan) {
  plan->n_q = a.n_rows * a.group_size;
  plan->qt = plan->n_q > 4 ? 8 : plan->n_q > 2 ? 4 : static_cast<int>(plan->n_q);
  plan->n_tiles = (plan->n_q + plan->qt - 1) / plan->qt;
  plan->hd = a.head_dim <= 64 ? 64 : a.head_dim <= 128 ? 128 : 256;
  plan->split_bytes = sizeof(float) * static_cast<size_t>(a.n_kv_heads) *
                      static_cast<size_t>(plan->n_q) * (static_cast<size_t>(a.head_dim) + 1);
  plan->splits = 1;
  const int64_t base = a.n_kv_heads * plan->n_tiles;
  if (a.n_blocks == 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  const int64_t target = 2 * static_cast<int64_t>(sms);  // two resident CTAs per SM
  if (base >= target) return cudaSuccess;
  int64_t splits = (target + base - 1) / base;
  splits = splits < 8 * static_cast<int64_t>(a.n_blocks) ? splits : 8 * int64_t{a.n_blocks};
  plan->splits = static_cast<int>(splits < kMaxSplits ? splits : kMaxSplits);
  return cudaSuccess;
}

}  // namespace

const char* PartialAttentionDeviceArgsError(const PartialAttentionArgs& a) {
  if (const char* error = PartialAttentionShapeError(a)) return error;
  // Grid limits of this kernel.
  if (a.n_kv_heads > 65535) return "n_kv_heads out of range [1, 65535]";
  if (a.n_rows * a.group_size > (int64_t{1} << 31) / 2) return "n_rows * group_size too large";
  return nullptr;
}

cudaError_t PartialAttentionWorkspaceBytes(const PartialAttentionArgs& args, size_t* bytes) {
  *bytes = 0;
  if (PartialAttentionDeviceArgsError(args) != nullptr) return cudaErrorInvalidValue;
  if (args.n_rows == 0) return cudaSuccess;
  Plan plan;
  const cudaError_t err = MakePlan(args, &plan);
  if (err != cudaSuccess) return err;
  *bytes = plan.splits > 1 ? plan.split_bytes * plan.splits : 0;
  return cudaSuccess;
}

cudaError_t PartialAttention(const PartialAttentionArgs& a, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  if (PartialAttentionDeviceArgsError(a) != nullptr) return cudaErrorInvalidValue;
  if (a.n_rows == 0) return cudaSuccess;
  Plan plan;
  cudaError_t err = MakePlan(a, &plan);
  if (err != cudaSuccess) return err;
  const int64_t fits = workspace != nullptr ? workspace_bytes / plan.split_bytes : 0;
  const int splits = fits >= 2 ? static_cast<int>(fits < plan.splits ? fits : plan.splits) : 1;
  const int64_t heads = static_cast<int64_t>(a.n_kv_heads) * a.group_size;
  Params p;
  p.q = a.q;
  p.q_stride = a.q_row_stride != 0 ? a.q_row_stride : heads * a.head_dim;
  p.q_pos = a.q_pos;
  p.blocks = a.blocks;
  p.n_blocks = a.n_blocks;
  p.o = a.o;
  p.o_stride = a.o_row_stride != 0 ? a.o_row_stride : heads * a.head_dim;
  p.lse = a.lse;
  p.lse_stride = a.lse_row_stride != 0 ? a.lse_row_stride : heads;
  p.part_o = splits > 1 ? static_cast<float*>(workspace) : nullptr;
  p.part_lse = splits > 1 ? p.part_o + splits * a.n_kv_heads * plan.n_q * a.head_dim : nullptr;
  p.head_dim = a.head_dim;
  p.group = a.group_size;
  p.n_kv = a.n_kv_heads;
  p.n_q = plan.n_q;
  p.n_splits = splits;
  p.scale = a.scale;
  p.causal = a.causal;
  if (plan.n_tiles * splits > INT32_MAX) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(plan.n_tiles * splits),
                  static_cast<unsigned>(a.n_kv_heads));
  switch (a.kv_dtype) {
    case KvDtype::kF32:
      err = DispatchHd<KvDtype::kF32>(plan.hd, plan.qt, p, grid, stream);
      break;
    case KvDtype::kF16:
      err = DispatchHd<KvDtype::kF16>(plan.hd, plan.qt, p, grid, stream);
      break;
    case KvDtype::kBF16:
      err = DispatchHd<KvDtype::kBF16>(plan.hd, plan.qt, p, grid, stream);
      break;
  }
  if (err != cudaSuccess || splits == 1) return err;
  const dim3 merge_grid(static_cast<unsigned>(plan.n_q), static_cast<unsigned>(a.n_kv_heads));
  cudaLaunchConfig_t config = {};
  config.gridDim = merge_grid;
  config.blockDim = dim3(128);
  config.stream = stream;
  cudaLaunchAttribute pdl;
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &pdl;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, MergeSplitsKernel, p);
}

}  // namespace headwise::kernels::cuda
