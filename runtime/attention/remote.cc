// Wire format: every call starts with a u32 kind. Integers and floats are
// written in host byte order (ranks of one cluster share an architecture).
// Delegate body: i32 head_dim, group_size, block_tokens, dtype; f32 scale;
// i64 n_rows; i32 n_heads; i32 q_pos[n_rows]; per head: i32 kv head,
// i32 n_blocks, n_blocks x {u64 offset, i32 n_tokens, i32 pos0}; then the
// queries as f32.
#include "runtime/attention/remote.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/attention.h"
#include "runtime/attention/near_storage.h"
#include "runtime/kv/wire.h"

namespace headwise::attention {
namespace {

using kv::CallKind;
using Writer = kv::WireWriter;
using Reader = kv::WireReader;
using kv::Call;

std::vector<std::byte> KindOnly(CallKind kind) {
  Writer w;
  w.Put(static_cast<uint32_t>(kind));
  return w.Take();
}

absl::Status Malformed(const std::string& what) {
  return absl::InvalidArgumentError("malformed delegate request: " + what);
}

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

std::vector<std::byte> EncodeDelegate(const DelegateRequest& r) {
  Writer w;
  w.Put(static_cast<uint32_t>(CallKind::kDelegate));
  w.Put(r.head_dim);
  w.Put(r.group_size);
  w.Put(r.block_tokens);
  w.Put(static_cast<int32_t>(r.dtype));
  w.Put(r.scale);
  w.Put(r.n_rows);
  w.Put(static_cast<int32_t>(r.heads.size()));
  w.PutArray(r.q_pos.data(), r.q_pos.size());
  for (size_t j = 0; j < r.heads.size(); ++j) {
    w.Put(r.heads[j]);
    w.Put(static_cast<int32_t>(r.blocks[j].size()));
    for (const RemoteBlock& b : r.blocks[j]) {
      w.Put(b.offset);
      w.Put(b.n_tokens);
      w.Put(b.pos0);
      w.Put(b.on_disk);
      w.Put(static_cast<int32_t>(b.tokens.size()));
      w.PutArray(b.tokens.data(), b.tokens.size());
      w.Put(b.top_k);
    }
  }
  w.PutArray(r.q.data(), r.q.size());
  return w.Take();
}

absl::Status DecodeDelegateReply(std::span<const std::byte> reply, int64_t n_rows, int64_t n_heads,
                                 int32_t group_size, int32_t head_dim, std::vector<float>* o,
                                 std::vector<float>* lse) {
  const size_t n_lse = static_cast<size_t>(n_rows * n_heads * group_size);
  const size_t n_o = n_lse * static_cast<size_t>(head_dim);
  if (reply.size() != (n_o + n_lse) * sizeof(float)) {
    return absl::InternalError(absl::StrCat("delegate reply of ", reply.size(), " bytes, expected ",
                                            (n_o + n_lse) * sizeof(float)));
  }
  o->resize(n_o);
  lse->resize(n_lse);
  std::memcpy(o->data(), reply.data(), n_o * sizeof(float));
  std::memcpy(lse->data(), reply.data() + n_o * sizeof(float), n_lse * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<comm::CallReply> MemoryRank::Handle(std::span<const std::byte> request) {
  Reader in(request);
  uint32_t kind = 0;
  if (!in.Get(&kind)) return absl::InvalidArgumentError("empty call");
  Writer out;
  switch (static_cast<CallKind>(kind)) {
    case CallKind::kDelegate:
      return Delegate(request.subspan(sizeof(uint32_t)));
    case CallKind::kPing:
      return comm::CallReply{};
    case CallKind::kProbe: {
      out.Put(MeasureAttentionGbps());
      const kv::DiskTierOptions& disk = storage_.options();
      if (disk_read_gbps_ < 0) {
        disk_read_gbps_ = 0;
        if (disk.bytes > 0) {
          absl::StatusOr<double> gbps = kv::MeasureSequentialReadGbps(
              disk.dir, std::min<int64_t>(disk.bytes, int64_t{64} << 20));
          if (!gbps.ok()) return gbps.status();
          disk_read_gbps_ = *gbps;
        }
      }
      out.Put(disk.bytes);
      out.Put(disk_read_gbps_);
      return comm::CallReply{out.Take(), false};
    }
    case CallKind::kStats: {
      const MemoryRankStats s = stats();
      out.Put(s.delegate_calls);
      out.Put(s.kv_bytes_attended);
      out.Put(s.attention_seconds);
      out.Put(s.pool_bytes);
      out.Put(s.disk_bytes);
      out.Put(s.disk_bytes_written);
      out.Put(s.disk_bytes_read);
      out.Put(s.disk_read_seconds);
      return comm::CallReply{out.Take(), false};
    }
    case CallKind::kStop:
      return comm::CallReply{{}, true};
    case CallKind::kDemote:
    case CallKind::kDiskWrite:
    case CallKind::kFetch:
    case CallKind::kSnapshotSave:
    case CallKind::kSnapshotLoad:
      return storage_.Handle(static_cast<CallKind>(kind), request.subspan(sizeof(uint32_t)));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown call kind ", kind));
}

MemoryRankStats MemoryRank::stats() const {
  MemoryRankStats s = stats_;
  s.pool_bytes = transport_.peers()[transport_.rank()].pool_bytes;
  s.disk_bytes = storage_.options().bytes;
  if (const kv::DiskPool* disk = storage_.disk(); disk != nullptr) {
    const kv::DiskStats d = disk->stats();
    s.disk_bytes_written = d.bytes_written;
    s.disk_bytes_read = d.bytes_read;
    s.disk_read_seconds = d.read_seconds;
  }
  return s;
}

absl::Status MemoryRank::Serve() {
  return transport_.Serve([this](std::span<const std::byte> request) { return Handle(request); });
}

absl::StatusOr<comm::CallReply> MemoryRank::Delegate(std::span<const std::byte> body) {
  const Clock::time_point start = Clock::now();
  Reader in(body);
  int32_t head_dim = 0, group = 0, block_tokens = 0, dtype = 0, n_heads = 0;
  float scale = 0;
  int64_t n_rows = 0;
  in.Get(&head_dim), in.Get(&group), in.Get(&block_tokens), in.Get(&dtype), in.Get(&scale);
  in.Get(&n_rows), in.Get(&n_heads);
  if (!in.ok()) return Malformed("short header");
  if (head_dim < 1 || head_dim > kernels::kMaxHeadDim || group < 1 || group > 1024 ||
      block_tokens < 1 || n_heads < 0 || n_heads > 4096 || n_rows < 0 ||
      n_rows > (int64_t{1} << 24) ||
      (dtype != static_cast<int32_t>(kernels::KvDtype::kF32) &&
       dtype != static_cast<int32_t>(kernels::KvDtype::kF16) &&
       dtype != static_cast<int32_t>(kernels::KvDtype::kBF16)) ||
      !std::isfinite(scale)) {
    return Malformed(absl::StrCat("head_dim ", head_dim, ", group ", group, ", block ",
                                  block_tokens, ", dtype ", dtype, ", rows ", n_rows, ", heads ",
                                  n_heads));
  }
  const kernels::KvDtype kv_dtype = static_cast<kernels::KvDtype>(dtype);
  const uint64_t half = uint64_t(block_tokens) * head_dim * kernels::KvDtypeSize(kv_dtype);
  const uint64_t pool_bytes =
      static_cast<uint64_t>(transport_.peers()[transport_.rank()].pool_bytes);
  const uint8_t* pool = transport_.pool();

  std::vector<int32_t> q_pos(static_cast<size_t>(n_rows));
  const std::byte* pos_bytes = in.Take(q_pos.size() * sizeof(int32_t));
  if (pos_bytes == nullptr) return Malformed("short positions");
  std::memcpy(q_pos.data(), pos_bytes, q_pos.size() * sizeof(int32_t));

  std::vector<int32_t> counts(static_cast<size_t>(n_heads));
  std::vector<DiskHead> disk;  // by entry, for entries with disk blocks
  struct Narrowing {
    int32_t entry, top_k;
    std::vector<uint16_t> tokens;
  };
  std::vector<Narrowing> narrow;  // per view
  views_.clear();
  gather_.Clear();
  int64_t kv_bytes = 0;
  for (int32_t j = 0; j < n_heads; ++j) {
    int32_t head = 0, n_blocks = 0;
    in.Get(&head), in.Get(&n_blocks);
    if (!in.ok() || n_blocks < 0 || uint64_t(n_blocks) * 28 > in.remaining()) {
      return Malformed(absl::StrCat("block list of entry ", j));
    }
    counts[j] = 0;
    for (int32_t b = 0; b < n_blocks; ++b) {
      RemoteBlock block;
      in.Get(&block.offset), in.Get(&block.n_tokens), in.Get(&block.pos0), in.Get(&block.on_disk);
      if (!in.ok() || block.n_tokens < 1 || block.n_tokens > block_tokens || block.pos0 < 0 ||
          (block.on_disk != 0 && block.on_disk != 1) ||
          (!block.on_disk && (block.offset > pool_bytes || 2 * half > pool_bytes - block.offset))) {
        return Malformed(absl::StrCat("block ", b, " of kv head ", head, ": ", block.n_tokens,
                                      " tokens at ", block.on_disk ? "disk slot " : "offset ",
                                      block.offset, ", pool of ", pool_bytes, " bytes"));
      }
      int32_t n_selected = 0;
      in.Get(&n_selected);
      if (!in.ok() || n_selected < 0 || n_selected > block.n_tokens ||
          uint64_t(n_selected) * 2 > in.remaining()) {
        return Malformed(absl::StrCat("token selection of block ", b, " of kv head ", head));
      }
      block.tokens.resize(size_t(n_selected));
      if (n_selected > 0) {
        std::memcpy(block.tokens.data(), in.Take(block.tokens.size() * 2), block.tokens.size() * 2);
      }
      for (int32_t i = 0; i < n_selected; ++i) {
        if (block.tokens[i] >= block.n_tokens ||
            (i > 0 && block.tokens[i] <= block.tokens[i - 1])) {
          return Malformed(absl::StrCat("token selection of block ", b, " of kv head ", head,
                                        ": offset ", block.tokens[i], " of ", block.n_tokens));
        }
      }
      in.Get(&block.top_k);
      if (!in.ok() || block.top_k < 0 || (block.top_k > 0 && n_rows != 1)) {
        return Malformed(absl::StrCat("token top-k of block ", b, " of kv head ", head));
      }
      const int64_t attended = n_selected > 0    ? n_selected
                               : block.top_k > 0 ? std::min(block.top_k, block.n_tokens)
                                                 : block.n_tokens;
      kv_bytes += 2 * attended * head_dim * int64_t(kernels::KvDtypeSize(kv_dtype));
      if (block.on_disk) {
        if (disk.size() <= size_t(j)) disk.resize(size_t(j) + 1);
        DiskHead& d = disk[j];
        d.slots.push_back(static_cast<int64_t>(block.offset));
        d.n_tokens.push_back(block.n_tokens);
        d.pos0.push_back(block.pos0);
        d.tokens.push_back(std::move(block.tokens));
        d.top_k.push_back(block.top_k);
        continue;
      }
      const uint8_t* k = pool + block.offset;
      views_.push_back({k, k + half, block.n_tokens, block.pos0});
      narrow.push_back({j, block.top_k, std::move(block.tokens)});
      ++counts[j];
    }
  }
  const size_t per_row = size_t(n_heads) * group * head_dim;
  if (in.remaining() != size_t(n_rows) * per_row * sizeof(float)) {
    return Malformed(absl::StrCat(in.remaining(), " bytes of queries, expected ",
                                  size_t(n_rows) * per_row * sizeof(float)));
  }
  std::vector<float> q(size_t(n_rows) * per_row);
  std::memcpy(q.data(), in.Take(q.size() * sizeof(float)), q.size() * sizeof(float));
  // Selected tokens gathered, or the top-k of a block chosen by their scores.
  const int64_t row_bytes = int64_t(head_dim) * int64_t(kernels::KvDtypeSize(kv_dtype));
  for (size_t i = 0; i < views_.size(); ++i) {
    const Narrowing& n = narrow[i];
    views_[i] =
        n.top_k > 0
            ? gather_.Add(views_[i],
                          TopTokens(views_[i], kv_dtype, head_dim,
                                    q.data() + size_t(n.entry) * group * head_dim, group, n.top_k),
                          row_bytes)
            : gather_.Add(views_[i], n.tokens, row_bytes);
  }

  const size_t n_lse = size_t(n_rows) * n_heads * group;
  std::vector<float> reply_floats(n_lse * head_dim + n_lse);
  float* o = reply_floats.data();
  float* lse = o + n_lse * head_dim;
  size_t first_view = 0;
  for (int32_t j = 0; j < n_heads; ++j) {
    kernels::PartialAttentionArgs p;
    p.head_dim = head_dim;
    p.group_size = group;
    p.n_kv_heads = 1;
    p.n_rows = n_rows;
    p.q = q.data() + size_t(j) * group * head_dim;
    p.q_row_stride = static_cast<int64_t>(per_row);
    p.q_pos = q_pos.data();
    p.kv_dtype = kv_dtype;
    p.blocks = views_.data() + first_view;
    p.n_blocks = counts[j];
    p.scale = scale;
    p.o = o + size_t(j) * group * head_dim;
    p.o_row_stride = static_cast<int64_t>(per_row);
    p.lse = lse + size_t(j) * group;
    p.lse_row_stride = int64_t(n_heads) * group;
    if (absl::Status s = device_.PartialAttention(p); !s.ok()) return s;
    first_view += counts[j];
    if (size_t(j) < disk.size() && !disk[j].slots.empty()) disk[j].args = p;
  }
  if (!disk.empty()) {
    // Disk blocks join their heads' partials as they stream off the disk.
    std::erase_if(disk, [](const DiskHead& d) { return d.slots.empty(); });
    absl::StatusOr<kv::DiskPool*> pool_disk = storage_.Disk(int64_t(2 * half));
    if (!pool_disk.ok()) return pool_disk.status();
    if (absl::Status s = AttendFromDisk(**pool_disk, disk, kDiskWindowBytes); !s.ok()) return s;
  }
  ++stats_.delegate_calls;
  stats_.kv_bytes_attended += kv_bytes;
  stats_.attention_seconds += Since(start);
  Writer out;
  out.PutArray(reply_floats.data(), reply_floats.size());
  return comm::CallReply{out.Take(), false};
}

double MeasureAttentionGbps() {
  // One query row over 8 MiB of f32 KV (64-dim heads, 256-token blocks):
  // the decode shape, bound by reading KV. Best of three.
  constexpr int32_t kDim = 64, kTokens = 256, kBlocks = 64;
  const size_t half = size_t(kTokens) * kDim;
  std::vector<float> kv(2 * half * kBlocks, 0.01f);
  std::vector<kernels::KvBlockView> views;
  for (int32_t b = 0; b < kBlocks; ++b) {
    const float* k = kv.data() + 2 * half * b;
    views.push_back({k, k + half, kTokens, b * kTokens});
  }
  std::vector<float> q(3 * kDim, 0.1f), o(3 * kDim), lse(3);
  kernels::PartialAttentionArgs p;
  p.head_dim = kDim;
  p.group_size = 3;
  p.n_rows = 1;
  p.q = q.data();
  p.kv_dtype = kernels::KvDtype::kF32;
  p.blocks = views.data();
  p.n_blocks = kBlocks;
  p.scale = 0.125f;
  p.o = o.data();
  p.lse = lse.data();
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < 3; ++i) {
    const Clock::time_point start = Clock::now();
    kernels::PartialAttention(p);
    best = std::min(best, Since(start));
  }
  return kv.size() * sizeof(float) / std::max(best, 1e-9) / 1e9;
}

absl::StatusOr<cluster::CostModel> ProbeCluster(comm::KvTransport& transport) {
  cluster::CostModel model;
  model.ranks.resize(transport.size());
  model.ranks[0].attention_gbps = MeasureAttentionGbps();
  for (int r = 1; r < transport.size(); ++r) {
    cluster::RankProbe& probe = model.ranks[r];
    probe.rtt_seconds = std::numeric_limits<double>::max();
    for (int i = 0; i < 3; ++i) {
      const Clock::time_point start = Clock::now();
      absl::StatusOr<std::vector<std::byte>> pong = Call(transport, r, KindOnly(CallKind::kPing));
      if (!pong.ok()) return pong.status();
      probe.rtt_seconds = std::min(probe.rtt_seconds, Since(start));
    }
    absl::StatusOr<std::vector<std::byte>> gbps = Call(transport, r, KindOnly(CallKind::kProbe));
    if (!gbps.ok()) return gbps.status();
    Reader probed(*gbps);
    if (!probed.Get(&probe.attention_gbps) || !probed.Get(&probe.disk_bytes) ||
        !probed.Get(&probe.disk_read_gbps)) {
      return absl::InternalError(absl::StrCat("bad probe reply from rank ", r));
    }
    // Link: one-sided reads of up to 4 MiB of the rank's pool, best of two.
    const int64_t bytes = std::min<int64_t>(int64_t{4} << 20, transport.peers()[r].pool_bytes);
    if (bytes > 0) {
      std::vector<uint8_t> sink(static_cast<size_t>(bytes));
      double best = std::numeric_limits<double>::max();
      for (int i = 0; i < 2; ++i) {
        const Clock::time_point start = Clock::now();
        absl::StatusOr<comm::RmaTicket> get =
            transport.PostGets(r, {{sink.data(), 0, static_cast<size_t>(bytes)}});
        if (!get.ok()) return get.status();
        if (absl::Status s = transport.Wait(*get); !s.ok()) return s;
        best = std::min(best, Since(start));
      }
      probe.link_gbps = bytes / std::max(best, 1e-9) / 1e9;
    }
  }
  return model;
}

absl::StatusOr<std::vector<MemoryRankStats>> CollectMemoryRankStats(comm::KvTransport& transport) {
  std::vector<MemoryRankStats> all(transport.size());
  for (int r = 1; r < transport.size(); ++r) {
    absl::StatusOr<std::vector<std::byte>> reply = Call(transport, r, KindOnly(CallKind::kStats));
    if (!reply.ok()) return reply.status();
    Reader in(*reply);
    MemoryRankStats& s = all[r];
    in.Get(&s.delegate_calls), in.Get(&s.kv_bytes_attended), in.Get(&s.attention_seconds);
    in.Get(&s.pool_bytes);
    in.Get(&s.disk_bytes), in.Get(&s.disk_bytes_written), in.Get(&s.disk_bytes_read);
    in.Get(&s.disk_read_seconds);
    if (!in.ok()) return absl::InternalError(absl::StrCat("bad stats reply from rank ", r));
  }
  return all;
}

absl::Status StopMemoryRanks(comm::KvTransport& transport) {
  absl::Status status;
  for (int r = 1; r < transport.size(); ++r) {
    status.Update(Call(transport, r, KindOnly(CallKind::kStop)).status());
  }
  return status;
}

}  // namespace headwise::attention
