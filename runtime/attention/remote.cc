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

namespace headwise::attention {
namespace {

enum class CallKind : uint32_t { kDelegate = 1, kPing = 2, kProbe = 3, kStats = 4, kStop = 5 };

class Writer {
 public:
  template <typename T>
  void Put(const T& value) {
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  template <typename T>
  void PutArray(const T* data, size_t n) {
    const auto* p = reinterpret_cast<const std::byte*>(data);
    bytes_.insert(bytes_.end(), p, p + n * sizeof(T));
  }
  std::vector<std::byte> Take() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
};

// Reads fields in order; a read past the end fails the reader for good.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* value) {
    if (bytes_.size() - at_ < sizeof(T)) return ok_ = false;
    std::memcpy(value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return ok_;
  }
  // A pointer to n elements in place (unaligned reads are memcpy'd by callers).
  const std::byte* Take(uint64_t n_bytes) {
    if (bytes_.size() - at_ < n_bytes) {
      ok_ = false;
      return nullptr;
    }
    const std::byte* p = bytes_.data() + at_;
    at_ += n_bytes;
    return p;
  }
  bool ok() const { return ok_; }
  size_t remaining() const { return bytes_.size() - at_; }

 private:
  std::span<const std::byte> bytes_;
  size_t at_ = 0;
  bool ok_ = true;
};

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

// Issues `request` to `rank` and waits for the reply.
absl::StatusOr<std::vector<std::byte>> Call(comm::KvTransport& transport, int rank,
                                            std::vector<std::byte> request) {
  std::vector<std::byte> reply;
  absl::StatusOr<comm::RmaTicket> ticket = transport.PostCall(rank, std::move(request), &reply);
  if (!ticket.ok()) return ticket.status();
  if (absl::Status s = transport.Wait(*ticket); !s.ok()) return s;
  return reply;
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
    case CallKind::kProbe:
      out.Put(MeasureAttentionGbps());
      return comm::CallReply{out.Take(), false};
    case CallKind::kStats:
      out.Put(stats_.delegate_calls);
      out.Put(stats_.kv_bytes_attended);
      out.Put(stats_.attention_seconds);
      out.Put(transport_.peers()[transport_.rank()].pool_bytes);
      return comm::CallReply{out.Take(), false};
    case CallKind::kStop:
      return comm::CallReply{{}, true};
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown call kind ", kind));
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
  views_.clear();
  int64_t kv_bytes = 0;
  for (int32_t j = 0; j < n_heads; ++j) {
    int32_t head = 0, n_blocks = 0;
    in.Get(&head), in.Get(&n_blocks);
    if (!in.ok() || n_blocks < 0 || uint64_t(n_blocks) * 16 > in.remaining()) {
      return Malformed(absl::StrCat("block list of entry ", j));
    }
    counts[j] = n_blocks;
    for (int32_t b = 0; b < n_blocks; ++b) {
      RemoteBlock block;
      in.Get(&block.offset), in.Get(&block.n_tokens), in.Get(&block.pos0);
      if (!in.ok() || block.offset > pool_bytes || 2 * half > pool_bytes - block.offset ||
          block.n_tokens < 1 || block.n_tokens > block_tokens || block.pos0 < 0) {
        return Malformed(absl::StrCat("block ", b, " of kv head ", head, ": ", block.n_tokens,
                                      " tokens at offset ", block.offset, ", pool of ", pool_bytes,
                                      " bytes"));
      }
      const uint8_t* k = pool + block.offset;
      views_.push_back({k, k + half, block.n_tokens, block.pos0});
      kv_bytes += 2 * int64_t(block.n_tokens) * head_dim * int64_t(kernels::KvDtypeSize(kv_dtype));
    }
  }
  const size_t per_row = size_t(n_heads) * group * head_dim;
  if (in.remaining() != size_t(n_rows) * per_row * sizeof(float)) {
    return Malformed(absl::StrCat(in.remaining(), " bytes of queries, expected ",
                                  size_t(n_rows) * per_row * sizeof(float)));
  }
  std::vector<float> q(size_t(n_rows) * per_row);
  std::memcpy(q.data(), in.Take(q.size() * sizeof(float)), q.size() * sizeof(float));

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
    if (gbps->size() != sizeof(double)) return absl::InternalError("bad probe reply");
    std::memcpy(&probe.attention_gbps, gbps->data(), sizeof(double));
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
