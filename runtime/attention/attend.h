// Exact attention of one layer over a sequence's KV store, HeadInfer style:
// the new tokens' K/V are appended to the open blocks on the device; the
// partial over the open blocks (causal) is merged by LSE with the partials
// over the sealed blocks, which are computed in place when the device can
// reach them, or streamed head group by head group through two staging
// buffers (the copy of group g+1 overlaps the compute of group g). In a
// distributed store, blocks homed on other ranks are either delegated (the
// queries go out first, the rank computes while this one does its own part,
// (o, lse) comes back) or pulled (read over the transport into landing or
// staging buffers and computed here, pipelined like local streaming); the
// mode per (layer, rank) comes from the store's ExecMode and cost model.
// Full open blocks are then sealed and sent home.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/kv/kv_store.h"

namespace headwise::attention {

struct AttendArgs {
  int32_t layer = 0;
  int64_t n_rows = 0;        // new tokens
  int32_t n_heads = 0;       // query heads
  const float* q = nullptr;  // [n_rows x n_heads x head_dim], RoPE applied
  const float* k = nullptr;  // [n_rows x n_kv_heads x head_dim]
  const float* v = nullptr;
  float* out = nullptr;  // [n_rows x n_heads x head_dim]
};

// Streaming figures, accumulated over calls.
struct StreamStats {
  int32_t head_group_size = 0;   // kv heads per streamed group (last plan)
  int32_t blocks_per_group = 0;  // blocks per head in one staged item (last plan)
  int64_t bytes_staged = 0;
  int64_t items = 0;
  double copy_wait_seconds = 0;  // compute thread blocked on copies
  double compute_seconds = 0;    // partials over staged blocks
  double wall_seconds = 0;       // the whole streamed part
  // Distributed stores: partials over other ranks' blocks.
  int64_t delegate_calls = 0;      // requests sent (one per rank and layer)
  int64_t pull_items = 0;          // staged items read from other ranks
  int64_t bytes_pulled = 0;        // KV bytes read from other ranks
  double remote_wait_seconds = 0;  // compute thread blocked on delegate replies
  // Disk tiers: KV read from this rank's disk (attended as it streamed in),
  // KV fetched from other ranks' disks (pull mode), and the time both took.
  int64_t disk_bytes_read = 0;
  double disk_read_seconds = 0;  // reading this rank's disk (within disk_seconds)
  int64_t bytes_fetched = 0;
  double disk_seconds = 0;
  // Sealed (layer, kv head, block)s the policy let attention read, of all.
  int64_t blocks_attended = 0;
  int64_t blocks_total = 0;
  // Tokens (per layer and kv head, open ones included) attended, of all.
  int64_t tokens_attended = 0;
  int64_t tokens_total = 0;
};

// Runs attention for args.n_rows new tokens at positions store.n_tokens(layer)
// onward and appends their K/V. Errors: ResourceExhausted from the store,
// or a device error naming the call.
absl::Status Attend(kv::KvStore& store, const AttendArgs& args, StreamStats* stats);

}  // namespace headwise::attention
