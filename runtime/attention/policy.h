// The approximate attention policies' selection (kv::AttentionPolicy): for
// one decode row of one layer, which sealed KV each kv head attends. Block
// lists per rank (memory and disk) come in; blocks not attended leave them,
// and blocks attended only in part get the token offsets to attend
// (Selection). Selected tokens are attended exactly wherever they live
// (this rank, a memory rank's pool, a disk) by gathering their K/V rows into
// a dense block (TokenGather) next to the memory that holds them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/attention.h"
#include "runtime/attention/attend.h"
#include "runtime/attention/token_gather.h"
#include "runtime/kv/kv_store.h"

namespace headwise::attention {

// Per kv head, the sealed block indices one rank holds.
using HeadLists = std::vector<std::vector<int32_t>>;

// tokens[h][b]: the offsets within sealed block b of kv head h to attend,
// increasing; empty: the whole block (when the block is in a list at all).
// top_k[h][b] > 0: attend only that many of the block's tokens, the best
// by exact score, chosen where the block lives (hybrid's token top-k).
struct Selection {
  std::vector<std::vector<std::vector<uint16_t>>> tokens;
  std::vector<std::vector<int32_t>> top_k;

  bool empty() const { return tokens.empty() && top_k.empty(); }
  std::span<const uint16_t> Of(int32_t head, int32_t block) const {
    if (tokens.empty()) return {};
    return tokens[head][block];
  }
  int32_t TopK(int32_t head, int32_t block) const { return top_k.empty() ? 0 : top_k[head][block]; }
};

// One decode row of one layer: its queries (n_kv_heads * group * head_dim,
// RoPE'd) and the layer's sealed block count.
struct DecodeRow {
  int32_t layer = 0;
  const float* q = nullptr;
  int32_t group = 1;
  int32_t sealed = 0;
};

// hybrid: blocks (sinks', window's, best summaries) within the budget (per
// kv head, or shared by the layer's heads with pool_heads); with
// token_top_k, the chosen ones narrowed to their best tokens (selection).
void SelectHybrid(const kv::KvStore& store, const DecodeRow& row, std::vector<HeadLists>& lists,
                  std::vector<HeadLists>& disk, Selection* selection, StreamStats* stats);

// quantkv: scores every token with the quantized keys, accumulates the
// attention and evicts past the KV budget, then selects the sinks, the
// window and the tokens covering tau of the (group-averaged) approximate
// attention mass.
void SelectQuantKv(kv::KvStore& store, const DecodeRow& row, std::vector<HeadLists>& lists,
                   std::vector<HeadLists>& disk, Selection* selection, StreamStats* stats);

// quantkv, prefill: the approximate attention of a chunk's last rows (the
// end of a prompt holds the question: SnapKV's observation window) starts
// the accumulated scores, so the first decode step's eviction keeps what the
// prompt's end attended to. q is [n_rows x n_heads x head_dim] for the
// store's last n_rows tokens (already appended).
inline constexpr int64_t kObservedRows = 16;
void ObservePrefill(kv::KvStore& store, int32_t layer, const float* q, int64_t n_rows,
                    int32_t n_heads);

}  // namespace headwise::attention
