// The sealed blocks of a layer are split by home rank into per-head lists of
// block indices. Work items are (rank, a run of kv heads with equal list
// lengths, a range of list positions) sized to one buffer: whole heads when a
// head's blocks fit, else one head in block ranges. Streamed and pulled items
// share one pipeline: item i+1 is posted (copy engine or transport) before
// item i is computed, into the other buffer.
#include "runtime/attention/attend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/lse.h"
#include "runtime/attention/near_storage.h"
#include "runtime/attention/policy.h"
#include "runtime/attention/remote.h"

namespace headwise::attention {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Item {
  int32_t rank;                  // 0: this rank's blocks
  int32_t head_begin, head_end;  // kv heads, all with the same list length
  int32_t begin, end;            // positions in those heads' lists
  bool operator==(const Item&) const = default;
};

// What an item's data is waiting on.
struct Pending {
  device::CopyTicket copy = 0;
  comm::RmaTicket rma = 0;
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

// Items over `lists` for buffers of `buffer_bytes`; records the head-group
// shape of the last run in `stats`.
std::vector<Item> PlanItems(int32_t rank, const HeadLists& lists, int64_t block_bytes,
                            int64_t buffer_bytes, StreamStats* stats) {
  std::vector<Item> items;
  const int32_t n_heads = static_cast<int32_t>(lists.size());
  for (int32_t h = 0; h < n_heads;) {
    const int32_t length = static_cast<int32_t>(lists[h].size());
    int32_t run_end = h + 1;
    while (run_end < n_heads && static_cast<int32_t>(lists[run_end].size()) == length) ++run_end;
    if (length > 0) {
      const int64_t per_head = int64_t(length) * block_bytes;
      if (per_head <= buffer_bytes) {
        const int32_t heads =
            static_cast<int32_t>(std::min<int64_t>(run_end - h, buffer_bytes / per_head));
        for (int32_t g = h; g < run_end; g += heads) {
          items.push_back({rank, g, std::min(run_end, g + heads), 0, length});
        }
        if (stats != nullptr) stats->head_group_size = heads, stats->blocks_per_group = length;
      } else {
        const int32_t blocks = static_cast<int32_t>(buffer_bytes / block_bytes);
        for (int32_t one = h; one < run_end; ++one) {
          for (int32_t b = 0; b < length; b += blocks) {
            items.push_back({rank, one, one + 1, b, std::min(length, b + blocks)});
          }
        }
        if (stats != nullptr) stats->head_group_size = 1, stats->blocks_per_group = blocks;
      }
    }
    h = run_end;
  }
  return items;
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
    const int world = store_.distributed() ? store_.transport()->size() : 1;
    std::vector<HeadLists> disk_lists;
    std::vector<HeadLists> lists = Lists(a_.layer, sealed, world, &disk_lists);
    const DecodeRow row{a_.layer, a_.q, group_, sealed};
    using Kind = kv::AttentionPolicy::Kind;
    if (store_.policy().kind == Kind::kHybrid && a_.n_rows == 1) {
      SelectHybrid(store_, row, lists, disk_lists, &selection_, stats);
    } else if (store_.policy().kind == Kind::kQuantKv && a_.n_rows == 1) {
      SelectQuantKv(store_, row, lists, disk_lists, &selection_, stats);
    } else {
      if (store_.policy().kind == Kind::kQuantKv) {
        ObservePrefill(store_, a_.layer, a_.q, a_.n_rows, a_.n_heads);
      }
      CountAll(sealed, stats);
    }

    // Delegated partials go out first: memory ranks compute while this rank
    // does its own part.
    std::vector<int32_t> pulled;
    if (world > 1) {
      // A delegate or pull must not overtake the put of a block it reads.
      if (absl::Status s = store_.AwaitRemoteHomes(); !s.ok()) return s;
    }
    for (int32_t r = 1; r < world; ++r) {
      if (Empty(lists[r]) && Empty(disk_lists[r])) continue;
      if (Mode(r, lists[r], disk_lists[r]) == cluster::ExecMode::kPull) {
        pulled.push_back(r);
      } else if (absl::Status s = PostDelegate(r, lists[r], disk_lists[r], stats); !s.ok()) {
        return s;
      }
    }

    // Open blocks: the tail and this chunk's blocks, on the device; causal.
    lse_.assign(a_.n_rows * a_.n_heads, 0.0f);
    if (absl::Status s = OpenPartial(sealed, total, a_.out, lse_.data()); !s.ok()) return s;
    EnsureScratch();
    const bool in_place =
        store_.device().capabilities().zero_copy_host || store_.mode() == kv::KvMode::kResident;
    std::vector<Item> items;
    if (in_place) {
      if (absl::Status s = LocalInPlace(lists[0]); !s.ok()) return s;
    } else {
      items = PlanItems(0, lists[0], g_.BlockBytes(), store_.staging_bytes(), stats);
    }
    for (int32_t r : pulled) {
      std::vector<Item> more =
          PlanItems(r, lists[r], g_.BlockBytes(), store_.landing_bytes(), nullptr);
      items.insert(items.end(), more.begin(), more.end());
    }
    lists_ = std::move(lists);
    if (!items.empty() || (!in_place && sealed > 0)) {
      if (absl::Status s = Pipeline(items, /*staging=*/!in_place, stats); !s.ok()) return s;
    }
    // Disk blocks: this rank's computed as they stream off its disk; pulled
    // ranks' fetched (read there, shipped here) and computed here.
    if (absl::Status s = LocalDisk(disk_lists[0], stats); !s.ok()) return s;
    for (int32_t r : pulled) {
      if (absl::Status s = FetchDisk(r, disk_lists[r], stats); !s.ok()) return s;
    }
    if (absl::Status s = MergeDelegated(stats); !s.ok()) return s;
    return store_.Seal(a_.layer);
  }

 private:
  struct Delegated {
    int32_t rank;
    std::vector<int32_t> heads;
    std::vector<std::byte> reply;
    comm::RmaTicket ticket;
  };

  // Exact: every sealed block (and for a decode row every token) attended.
  void CountAll(int32_t sealed, StreamStats* stats) const {
    if (stats == nullptr) return;
    stats->blocks_attended += int64_t(sealed) * g_.n_kv_heads;
    stats->blocks_total += int64_t(sealed) * g_.n_kv_heads;
    if (a_.n_rows == 1) {
      stats->tokens_attended += store_.n_tokens(a_.layer) * g_.n_kv_heads;
      stats->tokens_total += store_.n_tokens(a_.layer) * g_.n_kv_heads;
    }
  }

  static bool Empty(const HeadLists& lists) {
    return std::all_of(lists.begin(), lists.end(), [](const auto& l) { return l.empty(); });
  }

  // lists[rank][head]: the sealed blocks of `layer` each rank holds in
  // memory (device, host pool); (*disk)[rank][head] those on its disk.
  std::vector<HeadLists> Lists(int32_t layer, int32_t sealed, int world,
                               std::vector<HeadLists>* disk = nullptr) const {
    std::vector<HeadLists> lists(world, HeadLists(g_.n_kv_heads));
    if (disk != nullptr) disk->assign(world, HeadLists(g_.n_kv_heads));
    for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
      for (int32_t b = 0; b < sealed; ++b) {
        const cluster::BlockHome home = store_.Home(layer, h, b);
        if (home.tier == cluster::PoolTier::kDisk) {
          if (disk != nullptr) (*disk)[home.rank][h].push_back(b);
        } else {
          lists[home.rank][h].push_back(b);
        }
      }
    }
    return lists;
  }

  cluster::ExecMode Mode(int32_t rank, const HeadLists& lists, const HeadLists& disk) const {
    int64_t blocks = 0, disk_blocks = 0, heads = 0;
    for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
      blocks += static_cast<int64_t>(lists[h].size() + disk[h].size());
      disk_blocks += static_cast<int64_t>(disk[h].size());
      heads += !lists[h].empty() || !disk[h].empty();
    }
    const int64_t message = a_.n_rows * heads * group_ * (2 * g_.head_dim + 1) * 4;
    return store_.options().costs.Choose(store_.options().mode, rank, blocks * g_.BlockBytes(),
                                         message, disk_blocks * g_.BlockBytes());
  }

  // This rank's disk blocks, attended as they stream off the disk.
  absl::Status LocalDisk(const HeadLists& disk, StreamStats* stats) {
    if (Empty(disk)) return absl::OkStatus();
    const Clock::time_point start = Clock::now();
    std::vector<DiskHead> heads;
    int64_t blocks = 0;
    for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
      if (disk[h].empty()) continue;
      DiskHead& head = heads.emplace_back();
      head.args = Args(h, h + 1, nullptr, 0, false, a_.out, lse_.data());
      for (int32_t b : disk[h]) {
        head.slots.push_back(store_.Home(a_.layer, h, b).slot);
        head.n_tokens.push_back(store_.BlockTokens(a_.layer, b));
        head.pos0.push_back(b * g_.block_tokens);
        const std::span<const uint16_t> tokens = selection_.Of(h, b);
        head.tokens.emplace_back(tokens.begin(), tokens.end());
        head.top_k.push_back(selection_.TopK(h, b));
      }
      blocks += static_cast<int64_t>(disk[h].size());
    }
    const kv::DiskStats before = store_.disk()->stats();
    if (absl::Status s = AttendFromDisk(*store_.disk(), heads, kDiskWindowBytes); !s.ok()) {
      return s;
    }
    if (stats != nullptr) {
      stats->disk_read_seconds += store_.disk()->stats().read_seconds - before.read_seconds;
      stats->disk_bytes_read += blocks * g_.BlockBytes();
      stats->disk_seconds += Since(start);
    }
    return absl::OkStatus();
  }

  // `rank`'s disk blocks, fetched here (the FlexGen way) a landing buffer's
  // worth at a time and computed on this rank's CPU.
  absl::Status FetchDisk(int32_t rank, const HeadLists& disk, StreamStats* stats) {
    if (Empty(disk)) return absl::OkStatus();
    const Clock::time_point start = Clock::now();
    const int64_t block = g_.BlockBytes();
    const int32_t per_batch =
        static_cast<int32_t>(std::max<int64_t>(1, store_.landing_bytes() / block));
    std::vector<uint8_t> buffer;
    std::vector<int64_t> slots;
    for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
      for (size_t first = 0; first < disk[h].size(); first += per_batch) {
        const size_t n = std::min<size_t>(per_batch, disk[h].size() - first);
        slots.clear();
        views_.clear();
        buffer.resize(n * size_t(block));
        for (size_t i = 0; i < n; ++i) {
          const int32_t b = disk[h][first + i];
          slots.push_back(store_.Home(a_.layer, h, b).slot);
          const uint8_t* k = buffer.data() + i * block;
          views_.push_back(
              {k, k + block / 2, store_.BlockTokens(a_.layer, b), b * g_.block_tokens});
        }
        gather_.Clear();
        if (absl::Status s =
                kv::FetchRemote(*store_.transport(), rank, block, slots, buffer.data());
            !s.ok()) {
          return s;
        }
        for (size_t i = 0; i < n; ++i) {
          views_[i] = Narrow(h, disk[h][first + i], views_[i]);
        }
        if (!kernels::PartialAttention(Args(h, h + 1, views_.data(), static_cast<int32_t>(n), false,
                                            part_o_.data(), part_lse_.data()))) {
          return absl::InternalError("fetched partial attention: inconsistent shapes");
        }
        MergeHeads(a_.out, lse_.data(), part_o_.data(), part_lse_.data(), a_.n_rows, a_.n_heads,
                   g_.head_dim, h * group_, (h + 1) * group_);
        if (stats != nullptr) stats->bytes_fetched += int64_t(n) * block;
      }
    }
    if (stats != nullptr) stats->disk_seconds += Since(start);
    return absl::OkStatus();
  }

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

  // Causal partial over the open blocks [b0, b1) of every kv head.
  absl::Status OpenPartial(int32_t b0, int32_t b1, float* o, float* lse) {
    store_.Views(a_.layer, b0, b1, views_);
    return store_.device().PartialAttention(
        Args(0, g_.n_kv_heads, views_.data(), b1 - b0, /*causal=*/true, o, lse));
  }

  void EnsureScratch() {
    part_o_.resize(a_.n_rows * a_.n_heads * g_.head_dim);
    part_lse_.resize(a_.n_rows * a_.n_heads);
  }

  int64_t RowBytes() const {
    return int64_t(g_.head_dim) * int64_t(kernels::KvDtypeSize(g_.dtype));
  }

  // The view of block b of kv head h as the selection attends it: whole, its
  // selected tokens, or its top-k tokens scored here (gathered copies).
  kernels::KvBlockView Narrow(int32_t h, int32_t b, const kernels::KvBlockView& view) {
    if (const int32_t k = selection_.TopK(h, b); k > 0) {
      const std::vector<uint16_t> top = TopTokens(
          view, g_.dtype, g_.head_dim, a_.q + int64_t(h) * group_ * g_.head_dim, group_, k);
      return gather_.Add(view, top, RowBytes());
    }
    return gather_.Add(view, selection_.Of(h, b), RowBytes());
  }

  // Replaces the views of `item`'s partly selected blocks by gathered copies
  // of their selected tokens (host-readable buffers: cpu and sim devices).
  void ApplySelection(const Item& item, std::vector<kernels::KvBlockView>& views) {
    if (selection_.empty()) return;
    gather_.Clear();
    const int32_t n = item.end - item.begin;
    for (int32_t h = item.head_begin; h < item.head_end; ++h) {
      for (int32_t k = item.begin; k < item.end; ++k) {
        kernels::KvBlockView& view = views[size_t(h - item.head_begin) * n + (k - item.begin)];
        view = Narrow(h, lists_[item.rank][h][k], view);
      }
    }
  }

  // Computes `views` of `item` and merges the partial into the output.
  absl::Status ComputeItem(const Item& item, const std::vector<kernels::KvBlockView>& views) {
    absl::Status s = store_.device().PartialAttention(
        Args(item.head_begin, item.head_end, views.data(), item.end - item.begin, false,
             part_o_.data(), part_lse_.data()));
    if (!s.ok()) return s;
    MergeHeads(a_.out, lse_.data(), part_o_.data(), part_lse_.data(), a_.n_rows, a_.n_heads,
               g_.head_dim, item.head_begin * group_, item.head_end * group_);
    return absl::OkStatus();
  }

  // This rank's sealed blocks where they are (zero-copy or resident).
  absl::Status LocalInPlace(const HeadLists& local) {
    const std::vector<Item> items =
        PlanItems(0, local, g_.BlockBytes(), std::numeric_limits<int64_t>::max(), nullptr);
    for (const Item& item : items) {
      std::vector<kernels::KvBlockView>& views = views_;
      views.clear();
      gather_.Clear();
      for (int32_t h = item.head_begin; h < item.head_end; ++h) {
        for (int32_t i = item.begin; i < item.end; ++i) {
          const int32_t b = local[h][i];
          views.push_back(Narrow(h, b, store_.View(a_.layer, h, b)));
        }
      }
      if (absl::Status s = ComputeItem(item, views); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Posts the data of `item` (of `layer`, over `lists`) into buffer `slot`:
  // the staging buffer when `staging`, else a host landing buffer (pulled
  // items on zero-copy devices). Fills its views.
  absl::StatusOr<Pending> Stage(const Item& item, int32_t layer, const HeadLists& lists, int slot,
                                bool staging, std::vector<kernels::KvBlockView>& views) {
    const int64_t block = g_.BlockBytes();
    const int64_t half = block / 2;
    uint8_t* base = nullptr;
    if (staging) {
      base = static_cast<uint8_t*>(store_.staging(slot));
    }
    const int32_t n = item.end - item.begin;
    views.resize(size_t(item.head_end - item.head_begin) * n);
    std::vector<device::CopyItem> copies;
    std::vector<comm::RmaItem> gets;
    uint8_t* landing = nullptr;
    if (item.rank != 0) {
      absl::StatusOr<uint8_t*> buffer = store_.Landing(slot);
      if (!buffer.ok()) return buffer.status();
      landing = *buffer;
      if (!staging) base = landing;
    }
    for (int32_t h = item.head_begin; h < item.head_end; ++h) {
      for (int32_t k = item.begin; k < item.end; ++k) {
        const int32_t b = lists[h][k];
        const size_t i = size_t(h - item.head_begin) * n + (k - item.begin);
        uint8_t* dst = base + i * block;
        if (item.rank == 0) {
          absl::StatusOr<const uint8_t*> src = store_.SealedBlockData(layer, h, b);
          if (!src.ok()) return src.status();
          copies.push_back({dst, *src, static_cast<size_t>(block)});
        } else {
          gets.push_back({landing + i * block,
                          static_cast<uint64_t>(store_.RemoteOffset(layer, h, b)),
                          static_cast<size_t>(block)});
          if (staging) copies.push_back({dst, landing + i * block, static_cast<size_t>(block)});
        }
        views[i] = {dst, dst + half, store_.BlockTokens(layer, b), b * g_.block_tokens};
      }
    }
    Pending pending;
    if (!gets.empty()) {
      absl::StatusOr<comm::RmaTicket> rma =
          store_.transport()->PostGets(item.rank, std::move(gets));
      if (!rma.ok()) return rma.status();
      pending.rma = *rma;
      // Pulled blocks reach the device from the landing buffer once read.
      if (staging) {
        if (absl::Status s = store_.transport()->Wait(pending.rma); !s.ok()) return s;
        pending.rma = 0;
      }
    }
    if (!copies.empty()) {
      absl::StatusOr<device::CopyTicket> copy =
          store_.device().PostCopy(device::CopyDirection::kToDevice, std::move(copies));
      if (!copy.ok()) return copy.status();
      pending.copy = *copy;
    }
    return pending;
  }

  // Whether a prefetched item holds exactly the blocks `item` names (a
  // policy may attend other blocks than the prefetch assumed).
  bool SameBlocks(const Item& item, const kv::KvStore::StagedCopy& staged) const {
    const int32_t n = item.end - item.begin;
    if (staged.views.size() != size_t(item.head_end - item.head_begin) * n) return false;
    for (int32_t h = item.head_begin; h < item.head_end; ++h) {
      for (int32_t k = item.begin; k < item.end; ++k) {
        const kernels::KvBlockView& view =
            staged.views[size_t(h - item.head_begin) * n + k - item.begin];
        if (view.first_pos != lists_[0][h][k] * g_.block_tokens) return false;
      }
    }
    return true;
  }

  absl::Status WaitFor(const Pending& pending) {
    if (pending.rma != 0) {
      if (absl::Status s = store_.transport()->Wait(pending.rma); !s.ok()) return s;
    }
    if (pending.copy != 0) return store_.device().Wait(pending.copy);
    return absl::OkStatus();
  }

  // Posts the first local item of the next layer to stream (layer+1, or
  // layer 0 of the next step) into `slot`, so the copy overlaps this layer's
  // last compute and the dense part in between. Its sealed blocks cannot
  // change before it runs: a layer seals only at the end of its own attention.
  absl::Status PrefetchNextLayer(int slot) {
    const int32_t next = (a_.layer + 1) % g_.n_layers;
    const int world = store_.distributed() ? store_.transport()->size() : 1;
    const HeadLists local = Lists(next, store_.n_sealed(next), world)[0];
    const std::vector<Item> items =
        PlanItems(0, local, g_.BlockBytes(), store_.staging_bytes(), nullptr);
    if (items.empty()) return absl::OkStatus();
    kv::KvStore::StagedCopy& staged = store_.staged();
    absl::StatusOr<Pending> pending = Stage(items.front(), next, local, slot, true, staged.views);
    if (!pending.ok()) return pending.status();
    staged.layer = next;
    staged.head_begin = items.front().head_begin;
    staged.head_end = items.front().head_end;
    staged.block_begin = items.front().begin;
    staged.block_end = items.front().end;
    staged.slot = slot;
    staged.ticket = pending->copy;
    return absl::OkStatus();
  }

  // Streams `items` through two buffers (staging buffers when `staging`,
  // else landing buffers), posting item i+1 before computing item i. The
  // first local item may already be on its way (prefetched by the previous
  // layer); a prefetch of anything else is waited out and dropped.
  absl::Status Pipeline(const std::vector<Item>& items, bool staging, StreamStats* stats) {
    const Clock::time_point start = Clock::now();
    std::vector<kernels::KvBlockView> views[2];
    kv::KvStore::StagedCopy& staged = store_.staged();
    int base = 0;
    absl::StatusOr<Pending> next = Pending{};
    if (staging) {
      const bool match = !items.empty() && items.front().rank == 0 && staged.layer == a_.layer &&
                         staged.head_begin == items.front().head_begin &&
                         staged.head_end == items.front().head_end &&
                         staged.block_begin == items.front().begin &&
                         staged.block_end == items.front().end && SameBlocks(items.front(), staged);
      if (match) {
        base = staged.slot;
        next = Pending{staged.ticket, 0};
        views[base] = std::move(staged.views);
      } else if (staged.ticket != 0) {
        if (absl::Status s = store_.device().Wait(staged.ticket); !s.ok()) return s;
      }
      staged = kv::KvStore::StagedCopy();
      if (!match && !items.empty()) {
        next = Stage(items.front(), a_.layer, lists_[items.front().rank], base, true, views[base]);
      }
    } else if (!items.empty()) {
      next = Stage(items.front(), a_.layer, lists_[items.front().rank], base, false, views[base]);
    }

    double wait = 0, compute = 0;
    int64_t staged_bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!next.ok()) return next.status();
      const Pending pending = *next;
      const int slot = static_cast<int>((base + i) % 2), other = 1 - slot;
      if (i + 1 < items.size()) {
        const Item& following = items[i + 1];
        next = Stage(following, a_.layer, lists_[following.rank], other, staging, views[other]);
      } else if (staging) {
        if (absl::Status s = PrefetchNextLayer(other); !s.ok()) return s;
      }
      const Clock::time_point wait_start = Clock::now();
      if (absl::Status s = WaitFor(pending); !s.ok()) return s;
      wait += Since(wait_start);

      const Item& item = items[i];
      const Clock::time_point compute_start = Clock::now();
      ApplySelection(item, views[slot]);
      if (absl::Status s = ComputeItem(item, views[slot]); !s.ok()) return s;
      compute += Since(compute_start);
      const int64_t bytes =
          int64_t(item.head_end - item.head_begin) * (item.end - item.begin) * g_.BlockBytes();
      staged_bytes += bytes;
      if (item.rank != 0 && stats != nullptr) ++stats->pull_items, stats->bytes_pulled += bytes;
    }
    if (items.empty() && staging) {
      if (absl::Status s = PrefetchNextLayer(0); !s.ok()) return s;
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

  absl::Status PostDelegate(int32_t rank, const HeadLists& lists, const HeadLists& disk,
                            StreamStats* stats) {
    DelegateRequest request;
    request.head_dim = g_.head_dim;
    request.group_size = group_;
    request.block_tokens = g_.block_tokens;
    request.dtype = g_.dtype;
    request.scale = 1.0f / std::sqrt(static_cast<float>(g_.head_dim));
    request.n_rows = a_.n_rows;
    request.q_pos = pos_;
    for (int32_t h = 0; h < g_.n_kv_heads; ++h) {
      if (lists[h].empty() && disk[h].empty()) continue;
      request.heads.push_back(h);
      std::vector<RemoteBlock>& blocks = request.blocks.emplace_back();
      for (int32_t b : lists[h]) {
        blocks.push_back({static_cast<uint64_t>(store_.RemoteOffset(a_.layer, h, b)),
                          store_.BlockTokens(a_.layer, b),
                          b * g_.block_tokens,
                          0,
                          {}});
        const std::span<const uint16_t> tokens = selection_.Of(h, b);
        blocks.back().tokens.assign(tokens.begin(), tokens.end());
        blocks.back().top_k = selection_.TopK(h, b);
      }
      for (int32_t b : disk[h]) {
        blocks.push_back({static_cast<uint64_t>(store_.Home(a_.layer, h, b).slot),
                          store_.BlockTokens(a_.layer, b),
                          b * g_.block_tokens,
                          /*on_disk=*/1,
                          {}});
        const std::span<const uint16_t> tokens = selection_.Of(h, b);
        blocks.back().tokens.assign(tokens.begin(), tokens.end());
        blocks.back().top_k = selection_.TopK(h, b);
      }
    }
    const int64_t width = int64_t(group_) * g_.head_dim;
    request.q.resize(size_t(a_.n_rows) * request.heads.size() * width);
    float* q = request.q.data();
    for (int64_t r = 0; r < a_.n_rows; ++r) {
      for (int32_t h : request.heads) {
        const float* src = a_.q + (r * a_.n_heads + int64_t(h) * group_) * g_.head_dim;
        q = std::copy(src, src + width, q);
      }
    }
    Delegated& d = delegated_.emplace_back();
    d.rank = rank;
    d.heads = request.heads;
    absl::StatusOr<comm::RmaTicket> ticket =
        store_.transport()->PostCall(rank, EncodeDelegate(request), &d.reply);
    if (!ticket.ok()) return ticket.status();
    d.ticket = *ticket;
    if (stats != nullptr) ++stats->delegate_calls;
    return absl::OkStatus();
  }

  absl::Status MergeDelegated(StreamStats* stats) {
    const Clock::time_point start = Clock::now();
    for (Delegated& d : delegated_) {
      if (absl::Status s = store_.transport()->Wait(d.ticket); !s.ok()) return s;
      std::vector<float> o, lse;
      const int64_t nh = static_cast<int64_t>(d.heads.size());
      if (absl::Status s =
              DecodeDelegateReply(d.reply, a_.n_rows, nh, group_, g_.head_dim, &o, &lse);
          !s.ok()) {
        return s;
      }
      for (int64_t r = 0; r < a_.n_rows; ++r) {
        for (int64_t j = 0; j < nh; ++j) {
          const int64_t at = r * a_.n_heads + int64_t(d.heads[j]) * group_;
          const int64_t from = (r * nh + j) * group_;
          kernels::LseMerge(a_.out + at * g_.head_dim, lse_.data() + at,
                            o.data() + from * g_.head_dim, lse.data() + from, group_, g_.head_dim);
        }
      }
    }
    if (stats != nullptr && !delegated_.empty()) stats->remote_wait_seconds += Since(start);
    delegated_.clear();
    return absl::OkStatus();
  }

  kv::KvStore& store_;
  const kv::KvGeometry& g_;
  const AttendArgs& a_;
  const int32_t group_;
  std::vector<int32_t> pos_;
  std::vector<float> lse_, part_o_, part_lse_;
  std::vector<kernels::KvBlockView> views_;
  std::vector<HeadLists> lists_;
  Selection selection_;  // quantkv: tokens of partly attended blocks
  TokenGather gather_;
  std::deque<Delegated> delegated_;  // stable addresses: replies land in place
};

}  // namespace

absl::Status Attend(kv::KvStore& store, const AttendArgs& args, StreamStats* stats) {
  if (args.n_rows <= 0) return absl::OkStatus();
  return LayerAttention(store, args).Run(stats);
}

}  // namespace headwise::attention
