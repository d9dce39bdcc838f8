// The streamed part plans work items (a group of kv heads x a range of sealed
// blocks) that fit one staging buffer: whole heads when a head's sealed
// blocks fit, else one head in block ranges. Item i+1 is posted to the copy
// engine before item i is computed, into the other staging buffer.
#include "runtime/attention/attend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/lse.h"

namespace headwise::attention {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Item {
  int32_t head_begin, head_end;    // kv heads
  int32_t block_begin, block_end;  // sealed blocks
};

// Merges the partial of q heads [qh0, qh1) into the accumulator, row by row.
void MergeHeads(float* acc_o, float* acc_lse, const float* o, const float* lse, int64_t rows,
                int32_t n_heads, int32_t head_dim, int32_t qh0, int32_t qh1) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * n_heads + qh0;
    kernels::LseMerge(acc_o + at * head_dim, acc_lse + at, o + at * head_dim, lse + at, qh1 - qh0,
                      head_dim);
  }
}

class LayerAttention {
 public:
  LayerAttention(kv::KvStore& store, const AttendArgs& args)
      : store_(store),
        g_(store.geometry()),
        a_(args),
        group_(args.n_heads / g_.n_kv_heads),
        pos_(args.n_rows) {
    std::iota(pos_.begin(), pos_.end(), static_cast<int32_t>(store.n_tokens(args.layer)));
  }

  absl::Status Run(StreamStats* stats) {
    if (absl::Status s =
            store_.Append(a_.layer, a_.k, a_.v, a_.n_rows, int64_t(g_.n_kv_heads) * g_.head_dim);
        !s.ok()) {
      return s;
    }
    const int32_t sealed = store_.n_sealed(a_.layer), total = store_.n_blocks(a_.layer);
    // Open blocks: the tail and this chunk's blocks, on the device; causal.
    lse_.assign(a_.n_rows * a_.n_heads, 0.0f);
    if (absl::Status s =
            Partial(0, g_.n_kv_heads, sealed, total, /*causal=*/true, a_.out, lse_.data());
        !s.ok()) {
      return s;
    }
    if (sealed > 0) {
      const bool in_place =
          store_.device().capabilities().zero_copy_host || store_.mode() == kv::KvMode::kResident;
      absl::Status s = in_place ? SealedInPlace(sealed) : SealedStreamed(sealed, stats);
      if (!s.ok()) return s;
    }
    return store_.Seal(a_.layer);
  }

 private:
  kernels::PartialAttentionArgs Args(int32_t h0, int32_t h1, const kernels::KvBlockView* blocks,
                                     int32_t n_blocks, bool causal, float* o, float* lse) const {
    kernels::PartialAttentionArgs p;
    p.head_dim = g_.head_dim;
    p.group_size = group_;
    p.n_kv_heads = h1 - h0;
    p.n_rows = a_.n_rows;
    p.q = a_.q + int64_t(h0) * group_ * g_.head_dim;
    p.q_row_stride = int64_t(a_.n_heads) * g_.head_dim;
    p.q_pos = pos_.data();
    p.kv_dtype = g_.dtype;
    p.blocks = blocks;
    p.n_blocks = n_blocks;
    p.scale = 1.0f / std::sqrt(static_cast<float>(g_.head_dim));
    p.causal = causal;
    p.o = o + int64_t(h0) * group_ * g_.head_dim;
    p.o_row_stride = int64_t(a_.n_heads) * g_.head_dim;
    p.lse = lse + int64_t(h0) * group_;
    p.lse_row_stride = a_.n_heads;
    return p;
  }

  // Partial over blocks [b0, b1) of kv heads [h0, h1), read where they are.
  absl::Status Partial(int32_t h0, int32_t h1, int32_t b0, int32_t b1, bool causal, float* o,
                       float* lse) {
    store_.Views(a_.layer, b0, b1, views_);
    const int32_t n = b1 - b0;
    return store_.device().PartialAttention(
        Args(h0, h1, views_.data() + size_t(h0) * n, n, causal, o, lse));
  }

  void EnsureScratch() {
    part_o_.resize(a_.n_rows * a_.n_heads * g_.head_dim);
    part_lse_.resize(a_.n_rows * a_.n_heads);
  }

  absl::Status SealedInPlace(int32_t sealed) {
    EnsureScratch();
    if (absl::Status s =
            Partial(0, g_.n_kv_heads, 0, sealed, false, part_o_.data(), part_lse_.data());
        !s.ok()) {
      return s;
    }
    MergeHeads(a_.out, lse_.data(), part_o_.data(), part_lse_.data(), a_.n_rows, a_.n_heads,
               g_.head_dim, 0, a_.n_heads);
    return absl::OkStatus();
  }

  std::vector<Item> Plan(int32_t sealed, StreamStats* stats) const {
    const int64_t block = g_.BlockBytes();
    const int64_t per_head = int64_t(sealed) * block;
    std::vector<Item> items;
    if (per_head <= store_.staging_bytes()) {
      const int32_t heads =
          static_cast<int32_t>(std::min<int64_t>(g_.n_kv_heads, store_.staging_bytes() / per_head));
      for (int32_t h = 0; h < g_.n_kv_heads; h += heads) {
        items.push_back({h, std::min(g_.n_kv_heads, h + heads), 0, sealed});
      }
      if (stats != nullptr) stats->head_group_size = heads, stats->blocks_per_group = sealed;
    } else {
      const int32_t blocks = static_cast<int32_t>(store_.staging_bytes() / block);
      for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
        for (int32_t b = 0; b < sealed; b += blocks)
          items.push_back({h, h + 1, b, std::min(sealed, b + blocks)});
      }
      if (stats != nullptr) stats->head_group_size = 1, stats->blocks_per_group = blocks;
    }
    return items;
  }

  // Posts the copy of `item` into staging buffer `slot`; fills its views.
  absl::StatusOr<device::CopyTicket> Stage(const Item& item, int32_t layer, int slot,
                                           std::vector<kernels::KvBlockView>& views) {
    const int64_t block = g_.BlockBytes();
    const int64_t half = block / 2;
    uint8_t* base = static_cast<uint8_t*>(store_.staging(slot));
    const int32_t n = item.block_end - item.block_begin;
    std::vector<device::CopyItem> copies;
    views.resize(size_t(item.head_end - item.head_begin) * n);
    for (int32_t h = item.head_begin; h < item.head_end; ++h) {
      for (int32_t b = item.block_begin; b < item.block_end; ++b) {
        const size_t i = size_t(h - item.head_begin) * n + (b - item.block_begin);
        absl::StatusOr<const uint8_t*> src = store_.SealedBlockData(layer, h, b);
        if (!src.ok()) return src.status();
        uint8_t* dst = base + i * block;
        copies.push_back({dst, *src, static_cast<size_t>(block)});
        views[i] = {dst, dst + half, store_.BlockTokens(layer, b), b * g_.block_tokens};
      }
    }
    return store_.device().PostCopy(device::CopyDirection::kToDevice, std::move(copies));
  }

  // Posts the first item of the next layer to stream (layer+1, or layer 0 of
  // the next step) into `slot`, so the copy overlaps this layer's last
  // compute and the dense part in between. Its sealed blocks cannot change
  // before it runs: a layer seals only at the end of its own attention.
  absl::Status PrefetchNextLayer(int slot) {
    const int32_t next = (a_.layer + 1) % g_.n_layers;
    const int32_t sealed = store_.n_sealed(next);
    if (sealed == 0) return absl::OkStatus();
    const Item item = Plan(sealed, nullptr).front();
    kv::KvStore::StagedCopy& staged = store_.staged();
    absl::StatusOr<device::CopyTicket> ticket = Stage(item, next, slot, staged.views);
    if (!ticket.ok()) return ticket.status();
    staged.layer = next;
    staged.head_begin = item.head_begin;
    staged.head_end = item.head_end;
    staged.block_begin = item.block_begin;
    staged.block_end = item.block_end;
    staged.slot = slot;
    staged.ticket = *ticket;
    return absl::OkStatus();
  }

  absl::Status SealedStreamed(int32_t sealed, StreamStats* stats) {
    const Clock::time_point start = Clock::now();
    EnsureScratch();
    const std::vector<Item> items = Plan(sealed, stats);
    std::vector<kernels::KvBlockView> views[2];
    // The first item may already be on its way (prefetched by the previous
    // layer); a prefetch of anything else is waited out and dropped.
    kv::KvStore::StagedCopy& staged = store_.staged();
    int base = 0;
    absl::StatusOr<device::CopyTicket> next;
    const Item& first = items.front();
    if (staged.layer == a_.layer && staged.head_begin == first.head_begin &&
        staged.head_end == first.head_end && staged.block_begin == first.block_begin &&
        staged.block_end == first.block_end) {
      base = staged.slot;
      next = staged.ticket;
      views[base] = std::move(staged.views);
    } else {
      if (staged.ticket != 0) {
        if (absl::Status s = store_.device().Wait(staged.ticket); !s.ok()) return s;
      }
      next = Stage(first, a_.layer, base, views[base]);
    }
    staged = kv::KvStore::StagedCopy();

    double wait = 0, compute = 0;
    int64_t staged_bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!next.ok()) return next.status();
      const device::CopyTicket ticket = *next;
      const int slot = static_cast<int>((base + i) % 2), other = 1 - slot;
      if (i + 1 < items.size()) {
        next = Stage(items[i + 1], a_.layer, other, views[other]);
      } else if (absl::Status s = PrefetchNextLayer(other); !s.ok()) {
        return s;
      }
      const Clock::time_point wait_start = Clock::now();
      if (absl::Status s = store_.device().Wait(ticket); !s.ok()) return s;
      wait += Since(wait_start);

      const Item& item = items[i];
      const int32_t n = item.block_end - item.block_begin;
      const Clock::time_point compute_start = Clock::now();
      absl::Status s =
          store_.device().PartialAttention(Args(item.head_begin, item.head_end, views[slot].data(),
                                                n, false, part_o_.data(), part_lse_.data()));
      if (!s.ok()) return s;
      MergeHeads(a_.out, lse_.data(), part_o_.data(), part_lse_.data(), a_.n_rows, a_.n_heads,
                 g_.head_dim, item.head_begin * group_, item.head_end * group_);
      compute += Since(compute_start);
      staged_bytes += int64_t(item.head_end - item.head_begin) * n * g_.BlockBytes();
    }
    if (stats != nullptr) {
      stats->bytes_staged += staged_bytes;
      stats->items += static_cast<int64_t>(items.size());
      stats->copy_wait_seconds += wait;
      stats->compute_seconds += compute;
      stats->wall_seconds += Since(start);
    }
    return absl::OkStatus();
  }

  kv::KvStore& store_;
  const kv::KvGeometry& g_;
  const AttendArgs& a_;
  const int32_t group_;
  std::vector<int32_t> pos_;
  std::vector<float> lse_, part_o_, part_lse_;
  std::vector<kernels::KvBlockView> views_;
};

}  // namespace

absl::Status Attend(kv::KvStore& store, const AttendArgs& args, StreamStats* stats) {
  if (args.n_rows <= 0) return absl::OkStatus();
  return LayerAttention(store, args).Run(stats);
}

}  // namespace headwise::attention
