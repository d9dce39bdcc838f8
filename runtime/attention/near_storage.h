// Partial attention over blocks on this rank's disk tier, computed as they
// stream off the disk (InstInfer's idea with ordinary NVMe and CPUs): the
// KV never leaves the rank that stores it, only (o, lse) do. Used by memory
// ranks answering delegate requests and by the coordinator for its own disk
// blocks. Runs the CPU kernels on the calling thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/attention.h"
#include "runtime/kv/disk_pool.h"

namespace headwise::attention {

// One kv head's disk blocks and where its partial goes.
struct DiskHead {
  // One kv head (n_kv_heads = 1): q, q_pos, dtype, scale, n_rows, and o/lse
  // holding a partial (or lse = -inf, o = 0) that the disk blocks' partial
  // is LSE-merged into. blocks/n_blocks/causal are ignored.
  kernels::PartialAttentionArgs args;
  std::vector<int64_t> slots;  // disk slots, attended in this order
  std::vector<int32_t> n_tokens;
  std::vector<int32_t> pos0;  // position of each block's first token
  // Per block, the token offsets attended (increasing); empty or missing:
  // the whole block.
  std::vector<std::vector<uint16_t>> tokens;
  // Per block, > 0: only its this many best tokens for the (one) query row
  // (hybrid's token top-k); missing: 0.
  std::vector<int32_t> top_k;
};

// Streams every head's blocks through a read-ahead window of
// `window_bytes` (batches fixed by the block counts and the window, so the
// result is deterministic) and merges each head's partial into its args.
// Errors of the disk (DataLoss naming the block, ...) are returned as they are.
absl::Status AttendFromDisk(kv::DiskPool& disk, std::span<DiskHead> heads, int64_t window_bytes);

// The read-ahead window the runtime uses: a few MiB (two batches in flight
// keep an NVMe queue busy while the CPU computes the other half).
inline constexpr int64_t kDiskWindowBytes = int64_t{8} << 20;

}  // namespace headwise::attention
