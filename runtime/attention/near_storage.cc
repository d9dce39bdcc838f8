// The heads' slots are streamed as one list; each batch the disk hands out
// is cut at head boundaries and each piece computed against its head's
// queries, then merged into that head's accumulator.
#include "runtime/attention/near_storage.h"

#include <algorithm>
#include <vector>

#include "kernels/lse.h"
#include "runtime/attention/token_gather.h"

namespace headwise::attention {

absl::Status AttendFromDisk(kv::DiskPool& disk, std::span<DiskHead> heads, int64_t window_bytes) {
  std::vector<int64_t> slots;
  std::vector<size_t> head_begin;  // index of each head's first slot in `slots`
  for (const DiskHead& head : heads) {
    head_begin.push_back(slots.size());
    slots.insert(slots.end(), head.slots.begin(), head.slots.end());
  }
  head_begin.push_back(slots.size());
  if (slots.empty()) return absl::OkStatus();

  const int64_t block_bytes = disk.block_bytes();
  std::vector<kernels::KvBlockView> views;
  TokenGather gather;
  std::vector<float> o, lse;
  size_t h = 0;
  return disk.Stream(slots, window_bytes, [&](size_t first, size_t n, const uint8_t* data) {
    for (size_t at = first; at < first + n;) {
      while (head_begin[h + 1] <= at) ++h;
      const size_t end = std::min(first + n, head_begin[h + 1]);
      DiskHead& head = heads[h];
      const int64_t row_bytes =
          int64_t(head.args.head_dim) * int64_t(kernels::KvDtypeSize(head.args.kv_dtype));
      views.clear();
      gather.Clear();
      for (size_t i = at; i < end; ++i) {
        const uint8_t* k = data + (i - first) * block_bytes;
        const size_t j = i - head_begin[h];
        const kernels::KvBlockView view{k, k + block_bytes / 2, head.n_tokens[j], head.pos0[j]};
        const int32_t top_k = j < head.top_k.size() ? head.top_k[j] : 0;
        if (top_k > 0) {
          views.push_back(gather.Add(view,
                                     TopTokens(view, head.args.kv_dtype, head.args.head_dim,
                                               head.args.q, head.args.group_size, top_k),
                                     row_bytes));
        } else {
          views.push_back(j < head.tokens.size() ? gather.Add(view, head.tokens[j], row_bytes)
                                                 : view);
        }
      }
      const kernels::PartialAttentionArgs& acc = head.args;
      const int64_t rows = acc.n_rows, width = int64_t(acc.group_size) * acc.head_dim;
      o.resize(size_t(rows * width));
      lse.resize(size_t(rows * acc.group_size));
      kernels::PartialAttentionArgs p = acc;
      p.n_kv_heads = 1;
      p.blocks = views.data();
      p.n_blocks = static_cast<int32_t>(views.size());
      p.causal = false;
      p.o = o.data();
      p.o_row_stride = width;
      p.lse = lse.data();
      p.lse_row_stride = acc.group_size;
      p.parallel = nullptr;
      if (!kernels::PartialAttention(p)) {
        return absl::InternalError("disk partial attention: inconsistent shapes");
      }
      for (int64_t r = 0; r < rows; ++r) {
        kernels::LseMerge(acc.o + r * acc.o_row_stride, acc.lse + r * acc.lse_row_stride,
                          o.data() + r * width, lse.data() + r * acc.group_size, acc.group_size,
                          acc.head_dim);
      }
      at = end;
    }
    return absl::OkStatus();
  });
}

}  // namespace headwise::attention
