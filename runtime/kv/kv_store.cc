// Block lifecycle: an open block is allocated on the compute device (host
// memory on zero-copy devices), filled by Append, and sealed when full. In
// streaming mode a sealed block gets a host block and a ToHost copy; its
// device buffer is reclaimed once the copy completes (checked lazily, or
// waited for when device memory runs short). In resident mode it stays put.
#include "runtime/kv/kv_store.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/kv/kv_store_block.h"

namespace headwise::kv {
namespace {

std::string Bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / double(1 << 30));
  if (bytes >= (int64_t{1} << 20)) return absl::StrFormat("%.2f MiB", bytes / double(1 << 20));
  if (bytes >= (int64_t{1} << 10)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  return absl::StrCat(bytes, " bytes");
}

}  // namespace

int64_t KvGeometry::BlockBytes() const {
  return 2 * int64_t(block_tokens) * head_dim * int64_t(kernels::KvDtypeSize(dtype));
}

int64_t KvGeometry::TokenBytes() const {
  return 2 * int64_t(n_layers) * n_kv_heads * head_dim * int64_t(kernels::KvDtypeSize(dtype));
}

const char* AttentionPolicy::Name() const {
  switch (kind) {
    case Kind::kExact:
      return "exact";
    case Kind::kHybrid:
      return "hybrid";
    case Kind::kQuantKv:
      return "quantkv";
  }
  return "?";
}

std::string AttentionPolicy::Describe() const {
  switch (kind) {
    case Kind::kExact:
      return "exact";
    case Kind::kHybrid: {
      std::string knobs =
          absl::StrFormat("budget=%g, summary=%s", budget, BlockSummaryName(summary));
      if (summary == BlockSummary::kKeys) absl::StrAppend(&knobs, ", key_bits=", key_bits);
      if (pool_heads) absl::StrAppend(&knobs, ", pool_heads=1");
      if (token_top_k > 0) absl::StrAppend(&knobs, ", token_top_k=", token_top_k);
      return absl::StrFormat("hybrid(%s, window=%d, sinks=%d)", knobs, window_tokens, sink_tokens);
    }
    case Kind::kQuantKv:
      return absl::StrFormat(
          "quantkv(kv_budget=%g, tau=%g, top_k=%d, key_bits=%d, window=%d, "
          "sinks=%d)",
          budget, tau, top_k, key_bits, window_tokens, sink_tokens);
  }
  return "?";
}

absl::Status AttentionPolicy::Validate() const {
  const std::string name(Name());
  if (!(budget > 0 && budget <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", name, " ", kind == Kind::kQuantKv ? "kv budget" : "budget",
                     " must be in (0, 1], got ", absl::StrFormat("%g", budget)));
  }
  if (window_tokens < 0 || sink_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, " window and sinks must be >= 0, got ",
                                                   window_tokens, " and ", sink_tokens));
  }
  if (!(tau > 0 && tau <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantkv tau must be in (0, 1], got ", absl::StrFormat("%g", tau)));
  }
  if (token_top_k < 0 || token_top_k > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("hybrid token top-k must be in [0, 65535], got ", token_top_k));
  }
  if (kind == Kind::kHybrid && pool_heads && summary != BlockSummary::kKeys) {
    return absl::InvalidArgumentError(
        "hybrid pool_heads needs the keys summary (bounds do not compare across heads)");
  }
  if (top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("quantkv top-k must be >= 0, got ", top_k));
  }
  if (key_bits != 4 && key_bits != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " key bits must be 4 or 2, got ", key_bits));
  }
  return absl::OkStatus();
}

bool AttentionPolicy::NeedsKeys() const {
  return kind == Kind::kQuantKv || (kind == Kind::kHybrid && summary == BlockSummary::kKeys);
}

bool AttentionPolicy::NeedsBounds() const {
  return kind == Kind::kHybrid && summary == BlockSummary::kBounds;
}

std::optional<AttentionPolicy::BlockSummary> ParseBlockSummary(std::string_view name) {
  if (name == "keys") return AttentionPolicy::BlockSummary::kKeys;
  if (name == "bounds") return AttentionPolicy::BlockSummary::kBounds;
  return std::nullopt;
}

const char* BlockSummaryName(AttentionPolicy::BlockSummary summary) {
  return summary == AttentionPolicy::BlockSummary::kKeys ? "keys" : "bounds";
}

std::optional<AttentionPolicy::Kind> ParsePolicyKind(std::string_view name) {
  if (name == "exact") return AttentionPolicy::Kind::kExact;
  if (name == "hybrid") return AttentionPolicy::Kind::kHybrid;
  if (name == "quantkv") return AttentionPolicy::Kind::kQuantKv;
  return std::nullopt;
}

const char* TierName(Tier tier) {
  switch (tier) {
    case Tier::kDevice:
      return "device";
    case Tier::kHost:
      return "host";
    case Tier::kRemote:
      return "remote";
    case Tier::kDisk:
      return "disk";
  }
  return "?";
}

KvStore::KvStore(const KvStoreOptions& options)
    : geometry_(options.geometry),
      device_(options.device),
      options_(options),
      blocks_(options.geometry.n_layers),
      n_tokens_(options.geometry.n_layers, 0),
      n_sealed_(options.geometry.n_layers, 0),
      bounds_(options.geometry.n_layers) {
  for (auto& layer : blocks_) layer.resize(options.geometry.n_kv_heads);
  for (auto& layer : bounds_) layer.resize(options.geometry.n_kv_heads);
  device_stats_.budget_bytes = options.device_budget_bytes;
  host_stats_.budget_bytes = options.host_budget_bytes;
}

KvStore::~KvStore() {
  if (staged_.ticket != 0) (void)device_->Wait(staged_.ticket);
  // Copies home read device buffers and write host blocks owned here.
  for (Block* block : in_flight_) {
    if (block->copy_home != 0) (void)device_->Wait(block->copy_home);
    if (block->put != 0) (void)options_.transport->Wait(block->put);
  }
  for (const auto& layer : blocks_) {
    for (const auto& head : layer) {
      for (const auto& block : head) {
        if (block != nullptr && block->tier == Tier::kDisk) disk_->Forget(block->slot);
      }
    }
  }
  for (void* chunk : host_chunks_) device_->FreeHost(chunk);
  for (void* landing : landing_) {
    if (landing != nullptr) device_->FreeHost(landing);
  }
}

absl::StatusOr<uint8_t*> KvStore::AcquireHostBlock() {
  const int64_t bytes = geometry_.BlockBytes();
  auto full = [&] {
    return host_stats_.budget_bytes > 0 &&
           host_stats_.used_bytes + bytes > host_stats_.budget_bytes;
  };
  // Blocks on their way to other ranks hold host blocks until their puts
  // land (a slow link during a long prefill): wait for those first.
  if (full() && std::any_of(in_flight_.begin(), in_flight_.end(),
                            [](const Block* b) { return b->tier == Tier::kRemote; })) {
    if (absl::Status s = AwaitRemoteHomes(); !s.ok()) return s;
  }
  if (full()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("host KV pool full: ", Bytes(host_stats_.used_bytes), " of ",
                     Bytes(host_stats_.budget_bytes), " in use, a block needs ", Bytes(bytes),
                     "; raise --host-mem"));
  }
  if (host_free_.empty()) {
    // Chunks of several blocks: page-locking (cuda) is costly per call.
    const int64_t per_chunk = std::max<int64_t>(1, (int64_t{4} << 20) / bytes);
    void* chunk = device_->AllocateHost(static_cast<size_t>(per_chunk * bytes));
    if (chunk == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of host memory for ", Bytes(per_chunk * bytes), " of KV blocks"));
    }
    host_chunks_.push_back(chunk);
    for (int64_t i = per_chunk - 1; i >= 0; --i) {
      host_free_.push_back(static_cast<uint8_t*>(chunk) + i * bytes);
    }
  }
  uint8_t* block = host_free_.back();
  host_free_.pop_back();
  TrackHost(bytes);
  return block;
}

void KvStore::ReleaseHostBlock(uint8_t* data) {
  host_free_.push_back(data);
  TrackHost(-geometry_.BlockBytes());
}

absl::StatusOr<std::unique_ptr<KvStore>> KvStore::Create(const KvStoreOptions& options) {
  const KvGeometry& g = options.geometry;
  if (g.n_layers < 1 || g.n_kv_heads < 1 || g.head_dim < 1 || g.head_dim > kernels::kMaxHeadDim ||
      g.block_tokens < 1 || options.device == nullptr || options.max_append_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid KV store: ", g.n_layers, " layers, ", g.n_kv_heads, " kv heads, head_dim ",
        g.head_dim, ", ", g.block_tokens, "-token blocks, max append ", options.max_append_tokens,
        options.device == nullptr ? ", no device" : ""));
  }
  std::unique_ptr<KvStore> store(new KvStore(options));
  if (absl::Status status = store->Init(); !status.ok()) return status;
  return store;
}

absl::Status KvStore::set_policy(const AttentionPolicy& policy) {
  using Kind = AttentionPolicy::Kind;
  if (absl::Status s = policy.Validate(); !s.ok()) return s;
  if (policy.kind == Kind::kQuantKv && !device_->capabilities().host_writes_device_memory) {
    return absl::UnimplementedError(
        "quantkv gathers the selected tokens with the CPU: it needs the cpu or sim device (cuda: "
        "not yet)");
  }
  const bool bounds = options_.keep_key_summaries || policy.NeedsBounds();
  const bool keys = options_.keep_key_summaries || policy.NeedsKeys();
  const bool keys_fit = keys_ != nullptr && keys_->format().bits == policy.key_bits;
  if (length() > 0 && ((bounds && !keep_bounds_) || (policy.NeedsKeys() && !keys_fit))) {
    return absl::FailedPreconditionError(
        absl::StrCat("this sequence did not keep the key summaries ", policy.Name(),
                     " needs (create the store with that policy or keep_key_summaries)"));
  }
  keep_bounds_ = keep_bounds_ || bounds;
  if (keys && !keys_fit && length() == 0) {
    const KvGeometry& g = geometry_;
    keys_ = std::make_unique<KeyCache>(g.n_layers, g.n_kv_heads, g.head_dim, policy.key_bits);
  }
  options_.policy = policy;
  return absl::OkStatus();
}

absl::Status KvStore::Init() {
  const KvGeometry& g = geometry_;
  zero_copy_ = device_->capabilities().zero_copy_host;
  if (absl::Status s = set_policy(options_.policy); !s.ok()) return s;
  const int64_t block = g.BlockBytes();
  const int64_t heads = int64_t(g.n_layers) * g.n_kv_heads;
  const int64_t budget = options_.device_budget_bytes;
  const int64_t capacity_blocks =
      (std::max<int64_t>(options_.capacity_tokens, 1) + g.block_tokens - 1) / g.block_tokens;
  disk_ = options_.disk_pool;
  if (disk_ == nullptr) {
    absl::StatusOr<std::shared_ptr<DiskPool>> made = MakeDiskPool(options_);
    if (!made.ok()) return made.status();
    disk_ = std::move(*made);
    options_.disk_pool = disk_;
  }
  if (disk_ != nullptr && disk_->block_bytes() != block) {
    return absl::InvalidArgumentError(absl::StrCat("the disk tier holds ", disk_->block_bytes(),
                                                   "-byte blocks; this store needs ", block));
  }
  // Blocks get homes (a rank, a pool, a slot) when there is more than one
  // place to put them: other ranks or a disk tier.
  if (distributed() || disk_ != nullptr || options_.pools != nullptr) {
    std::shared_ptr<cluster::PoolLedger> pools = options_.pools;
    if (pools == nullptr) {
      absl::StatusOr<std::shared_ptr<cluster::PoolLedger>> made = MakePoolLedger(options_);
      if (!made.ok()) return made.status();
      pools = std::move(*made);
    }
    const int world = distributed() ? options_.transport->size() : 1;
    if (pools->block_bytes() != block || pools->world_size() != world) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the shared pool ledger has ", pools->block_bytes(), "-byte slots on ",
          pools->world_size(), " ranks; this store needs ", block, "-byte blocks on ", world));
    }
    absl::StatusOr<cluster::PlacementPlan> plan =
        cluster::PlacementPlan::Create(options_.placement, g.n_layers, g.n_kv_heads, pools);
    if (!plan.ok()) return plan.status();
    placement_ = std::move(*plan);
  }
  // Blocks homed on other ranks leave the device, so a distributed store on a
  // device with its own memory always streams (its staging buffers also land
  // pulled blocks).
  if (zero_copy_ ||
      ((budget == 0 || budget >= heads * capacity_blocks * block) && !distributed())) {
    mode_ = KvMode::kResident;
    return absl::OkStatus();
  }
  if (budget == 0) {
    return absl::InvalidArgumentError(
        "a distributed KV store on a device with its own memory needs a device budget "
        "(--device-mem)");
  }
  mode_ = KvMode::kStreaming;
  // Device memory in streaming mode: one open tail per (layer, kv head), the
  // open blocks of one append for two layers (the previous layer's may still
  // be on their way home), and two staging buffers of at least one block.
  const int64_t tails = heads * block;
  const int64_t append_blocks = (options_.max_append_tokens + g.block_tokens - 1) / g.block_tokens;
  const int64_t open = 2 * int64_t(g.n_kv_heads) * append_blocks * block;
  const int64_t needed = tails + open + 2 * block;
  if (budget < needed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device memory budget of ", Bytes(budget), " is too small for even one head group: need ",
        Bytes(needed), " = ", Bytes(tails), " of tail blocks (", heads,
        " layer x kv-head tails of ", Bytes(block), ") + ", Bytes(open), " of open blocks for a ",
        options_.max_append_tokens, "-token prefill chunk + 2 staging blocks of ", Bytes(block),
        "; raise --device-mem or lower --prefill-chunk / --kv-block"));
  }
  staging_bytes_ = (budget - tails - open) / 2 / block * block;
  for (device::DeviceBuffer& buffer : staging_) {
    absl::StatusOr<device::DeviceBuffer> allocated = device_->Allocate(staging_bytes_);
    if (!allocated.ok()) return allocated.status();
    buffer = std::move(*allocated);
    TrackDevice(staging_bytes_);
  }
  return absl::OkStatus();
}

void KvStore::TrackDevice(int64_t delta) {
  device_stats_.used_bytes += delta;
  device_stats_.peak_bytes = std::max(device_stats_.peak_bytes, device_stats_.used_bytes);
}

void KvStore::TrackHost(int64_t delta) {
  host_stats_.used_bytes += delta;
  host_stats_.peak_bytes = std::max(host_stats_.peak_bytes, host_stats_.used_bytes);
}

TierStats KvStore::tier_stats(Tier tier) const {
  if (tier == Tier::kDisk) {
    if (!placement_) return {};
    return {placement_->used_bytes(0, cluster::PoolTier::kDisk),
            placement_->peak_bytes(0, cluster::PoolTier::kDisk),
            placement_->pool_bytes(0, cluster::PoolTier::kDisk)};
  }
  return tier == Tier::kDevice ? device_stats_ : host_stats_;
}

int64_t KvStore::length() const { return *std::min_element(n_tokens_.begin(), n_tokens_.end()); }

int32_t KvStore::n_blocks(int32_t layer) const {
  return static_cast<int32_t>(blocks_[layer][0].size());
}

int32_t KvStore::BlockTokens(int32_t layer, int32_t block) const {
  return blocks_[layer][0][block]->n_tokens;
}

Tier KvStore::BlockTier(int32_t layer, int32_t head, int32_t block) const {
  return blocks_[layer][head][block]->tier;
}

kernels::KvBlockView KvStore::View(int32_t layer, int32_t head, int32_t block) const {
  const int64_t half = int64_t(geometry_.block_tokens) * geometry_.head_dim *
                       int64_t(kernels::KvDtypeSize(geometry_.dtype));
  const Block& b = *blocks_[layer][head][block];
  return {b.data, b.data + half, b.n_tokens, block * geometry_.block_tokens};
}

int64_t KvStore::landing_bytes() const {
  const int64_t block = geometry_.BlockBytes();
  if (mode_ == KvMode::kStreaming) return staging_bytes_;
  return std::max(block, options_.pull_buffer_bytes / block * block);
}

absl::StatusOr<uint8_t*> KvStore::Landing(int index) {
  if (landing_[index] == nullptr) {
    landing_[index] = device_->AllocateHost(static_cast<size_t>(landing_bytes()));
    if (landing_[index] == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of host memory for a ", Bytes(landing_bytes()), " pull buffer"));
    }
  }
  return static_cast<uint8_t*>(landing_[index]);
}

absl::StatusOr<std::unique_ptr<KvStore::Block>> KvStore::NewOpenBlock() {
  const int64_t bytes = geometry_.BlockBytes();
  auto block = std::make_unique<Block>();
  if (zero_copy_) {
    absl::StatusOr<uint8_t*> host = AcquireHostBlock();
    if (!host.ok()) return host.status();
    block->tier = Tier::kHost;
    block->host = block->data = *host;
    return block;
  }
  if (absl::Status s = ReclaimFinishedCopies(); !s.ok()) return s;
  absl::StatusOr<device::DeviceBuffer> buffer = device_->Allocate(bytes);
  // Device memory short: the copies home still hold buffers; wait for them.
  while (!buffer.ok() && absl::IsResourceExhausted(buffer.status()) && !in_flight_.empty()) {
    const device::CopyTicket oldest = in_flight_.front()->copy_home;
    if (oldest != 0) {
      if (absl::Status s = device_->Wait(oldest); !s.ok()) return s;
    } else if (absl::Status s = AwaitRemoteHomes(); !s.ok()) {
      return s;
    }
    if (absl::Status s = ReclaimFinishedCopies(); !s.ok()) return s;
    buffer = device_->Allocate(bytes);
  }
  if (!buffer.ok()) return buffer.status();
  block->tier = Tier::kDevice;
  block->data = static_cast<uint8_t*>(buffer->data());
  block->device_buffer = std::move(*buffer);
  TrackDevice(bytes);
  return block;
}

absl::Status KvStore::Append(int32_t layer, const float* k, const float* v, int64_t rows,
                             int64_t row_stride) {
  const KvGeometry& g = geometry_;
  const int64_t hd = g.head_dim;
  const int64_t elem = static_cast<int64_t>(kernels::KvDtypeSize(g.dtype));
  const int64_t half = int64_t(g.block_tokens) * hd * elem;  // bytes of K in a block
  const int64_t first = n_tokens_[layer];
  for (int64_t pos = first; pos < first + rows; ++pos) {
    const int64_t index = pos / g.block_tokens;
    for (int32_t h = 0; h < g.n_kv_heads; ++h) {
      auto& head = blocks_[layer][h];
      if (static_cast<int64_t>(head.size()) == index) {
        absl::StatusOr<std::unique_ptr<Block>> block = NewOpenBlock();
        if (!block.ok()) return block.status();
        head.push_back(std::move(*block));
      }
      head[index]->n_tokens = static_cast<int32_t>(pos % g.block_tokens + 1);
    }
  }
  n_tokens_[layer] = first + rows;
  // Key summaries of the rows, from the f32 keys (any device).
  if (keys_ != nullptr) keys_->Append(layer, k, rows, row_stride);
  for (int32_t h = 0; keep_bounds_ && h < g.n_kv_heads; ++h) {
    std::vector<float>& bounds = bounds_[layer][h];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = first + r, index = pos / g.block_tokens;
      if (static_cast<int64_t>(bounds.size()) < (index + 1) * 2 * hd) {
        bounds.resize(size_t((index + 1) * 2 * hd));
      }
      float* mn = bounds.data() + index * 2 * hd;
      float* mx = mn + hd;
      const float* key = k + r * row_stride + h * hd;
      const bool fresh = pos % g.block_tokens == 0;
      for (int64_t i = 0; i < hd; ++i) {
        mn[i] = fresh ? key[i] : std::min(mn[i], key[i]);
        mx[i] = fresh ? key[i] : std::max(mx[i], key[i]);
      }
    }
  }

  // Rows land in the blocks directly when the CPU can write device memory;
  // otherwise (cuda) they are converted on the host and copied, one K and
  // one V range per (kv head, block) touched.
  const bool direct = zero_copy_ || device_->capabilities().host_writes_device_memory;
  std::vector<uint8_t> converted(direct ? 0 : size_t(2 * rows * g.n_kv_heads * hd * elem));
  std::vector<device::CopyItem> copies;
  for (int32_t h = 0; h < g.n_kv_heads; ++h) {
    for (int64_t r = 0; r < rows;) {
      const int64_t pos = first + r, in_block = pos % g.block_tokens;
      const int64_t n = std::min<int64_t>(rows - r, g.block_tokens - in_block);
      Block& block = *blocks_[layer][h][pos / g.block_tokens];
      uint8_t* k_dst = block.data + in_block * hd * elem;
      uint8_t* v_dst = k_dst + half;
      uint8_t* k_out = direct ? k_dst : converted.data() + ((int64_t(h) * rows + r) * hd * elem);
      uint8_t* v_out = direct ? v_dst : k_out + int64_t(g.n_kv_heads) * rows * hd * elem;
      for (int64_t i = 0; i < n; ++i) {
        kernels::ToKvDtype(g.dtype, k + (r + i) * row_stride + h * hd, k_out + i * hd * elem, hd);
        kernels::ToKvDtype(g.dtype, v + (r + i) * row_stride + h * hd, v_out + i * hd * elem, hd);
      }
      if (!direct) {
        copies.push_back({k_dst, k_out, static_cast<size_t>(n * hd * elem)});
        copies.push_back({v_dst, v_out, static_cast<size_t>(n * hd * elem)});
      }
      r += n;
    }
  }
  if (copies.empty()) return absl::OkStatus();
  absl::StatusOr<device::CopyTicket> ticket =
      device_->PostCopy(device::CopyDirection::kToDevice, std::move(copies));
  if (!ticket.ok()) return ticket.status();
  return device_->Wait(*ticket);
}

absl::Status KvStore::SendHome(Block& block) {
  const int64_t bytes = geometry_.BlockBytes();
  absl::StatusOr<uint8_t*> host = AcquireHostBlock();
  if (!host.ok()) return host.status();
  block.host = *host;
  absl::StatusOr<device::CopyTicket> ticket = device_->PostCopy(
      device::CopyDirection::kToHost, {{block.host, block.data, static_cast<size_t>(bytes)}});
  if (!ticket.ok()) return ticket.status();
  block.copy_home = *ticket;
  block.tier = Tier::kHost;
  block.data = block.host;
  in_flight_.push_back(&block);
  return absl::OkStatus();
}

absl::Status KvStore::Seal(int32_t layer) {
  const int32_t full = static_cast<int32_t>(n_tokens_[layer] / geometry_.block_tokens);
  if (!placement_) {
    for (int32_t b = n_sealed_[layer]; b < full; ++b) {
      for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
        if (mode_ != KvMode::kStreaming) continue;
        if (absl::Status s = SendHome(*blocks_[layer][h][b]); !s.ok()) return s;
      }
    }
    n_sealed_[layer] = std::max(n_sealed_[layer], full);
    return absl::OkStatus();
  }
  // Place every new block first: placing may move older blocks (or one of
  // these) to a disk, which must happen before their host slots are reused.
  for (int32_t b = n_sealed_[layer]; b < full; ++b) {
    for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
      if (absl::StatusOr<cluster::BlockHome> home = placement_->Place(layer, h, b); !home.ok()) {
        return home.status();
      }
    }
  }
  std::vector<cluster::Demotion> demotions = placement_->TakeDemotions();
  std::erase_if(demotions, [&](const cluster::Demotion& d) {
    return d.layer == layer && d.block >= n_sealed_[layer];  // not sent yet: goes straight to disk
  });
  if (absl::Status s = Demote(demotions); !s.ok()) return s;
  for (int32_t b = n_sealed_[layer]; b < full; ++b) {
    for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
      Block& block = *blocks_[layer][h][b];
      const cluster::BlockHome home = *placement_->HomeOf(layer, h, b);
      absl::Status s;
      if (home.tier == cluster::PoolTier::kDisk) {
        s = SendToDisk(block, home.rank, home.slot, {layer, h, b});
      } else if (home.rank != 0) {
        s = SendRemote(block, home.rank, home.slot);
      } else if (mode_ == KvMode::kStreaming) {
        s = SendHome(block);
      }
      if (!s.ok()) return s;
    }
  }
  n_sealed_[layer] = std::max(n_sealed_[layer], full);
  // Zero-copy blocks can start their puts at once.
  return ReclaimFinishedCopies();
}

void KvStore::Views(int32_t layer, int32_t begin, int32_t end,
                    std::vector<kernels::KvBlockView>& views) const {
  const int32_t n = end - begin;
  const int64_t half = int64_t(geometry_.block_tokens) * geometry_.head_dim *
                       int64_t(kernels::KvDtypeSize(geometry_.dtype));
  views.resize(size_t(geometry_.n_kv_heads) * n);
  for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
    for (int32_t b = begin; b < end; ++b) {
      const Block& block = *blocks_[layer][h][b];
      views[size_t(h) * n + (b - begin)] = {block.data, block.data + half, block.n_tokens,
                                            b * geometry_.block_tokens};
    }
  }
}

absl::StatusOr<const uint8_t*> KvStore::SealedBlockData(int32_t layer, int32_t head,
                                                        int32_t block) {
  Block& b = *blocks_[layer][head][block];
  if (b.tier == Tier::kRemote || b.tier == Tier::kDisk) {
    return absl::FailedPreconditionError(absl::StrCat(
        "block (layer ", layer, ", kv head ", head, ", block ", block, ") lives on ",
        b.tier == Tier::kDisk ? "this rank's disk" : "rank " + std::to_string(b.rank)));
  }
  return HostData(b);
}

absl::StatusOr<const uint8_t*> KvStore::HostData(Block& b) {
  if (b.copy_home != 0) {
    if (absl::Status s = device_->Wait(b.copy_home); !s.ok()) return s;
    if (absl::Status s = ReclaimFinishedCopies(); !s.ok()) return s;
  }
  return b.data;
}

absl::Status KvStore::Truncate(int64_t n_tokens) {
  if (staged_.ticket != 0) {
    if (absl::Status s = device_->Wait(staged_.ticket); !s.ok()) return s;
  }
  staged_ = StagedCopy();
  if (placement_) {
    if (absl::Status s = AwaitRemoteHomes(); !s.ok()) return s;
  }
  if (keys_ != nullptr) keys_->Truncate(n_tokens);
  const int64_t bt = geometry_.block_tokens;
  for (int32_t layer = 0; layer < geometry_.n_layers; ++layer) {
    if (n_tokens_[layer] <= n_tokens) continue;
    const int64_t keep = (n_tokens + bt - 1) / bt;
    for (auto& head : blocks_[layer]) {
      for (size_t b = keep; b < head.size(); ++b) {
        Block& block = *head[b];
        if (block.copy_home != 0) {
          if (absl::Status s = device_->Wait(block.copy_home); !s.ok()) return s;
          block.copy_home = 0;
        }
        in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), &block),
                         in_flight_.end());
        if (block.device_buffer) TrackDevice(-static_cast<int64_t>(block.device_buffer.size()));
        if (block.host != nullptr) ReleaseHostBlock(block.host);
        if (block.tier == Tier::kDisk) disk_->Forget(block.slot);
        if (placement_)
          placement_->Release(layer, static_cast<int32_t>(&head - &blocks_[layer][0]),
                              static_cast<int32_t>(b));
      }
      head.resize(keep);
      if (keep > 0) head.back()->n_tokens = static_cast<int32_t>(n_tokens - (keep - 1) * bt);
    }
    n_tokens_[layer] = n_tokens;
    const int32_t full = static_cast<int32_t>(n_tokens / bt);
    if (keep > full && n_sealed_[layer] > full) {
      // The cut block is partly filled again: it is the tail, and tails live
      // on the device, so a block already sent home comes back.
      for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
        if (absl::Status s = ReopenTail(*blocks_[layer][h].back()); !s.ok()) return s;
        if (placement_) placement_->Release(layer, h, static_cast<int32_t>(keep - 1));
      }
    }
    n_sealed_[layer] = std::min(n_sealed_[layer], full);
  }
  return absl::OkStatus();
}

absl::Status KvStore::ReopenTail(Block& block) {
  if (block.tier == Tier::kRemote || block.tier == Tier::kDisk) {
    // Fetch it back from its home (a rank's pool or a disk) into a host block first.
    absl::StatusOr<uint8_t*> host = AcquireHostBlock();
    if (!host.ok()) return host.status();
    const int64_t bytes = geometry_.BlockBytes();
    if (block.tier == Tier::kDisk) {
      if (absl::Status s = disk_->Read(block.slot, *host); !s.ok()) return s;
      disk_->Forget(block.slot);
    } else if (block.pool == cluster::PoolTier::kDisk) {
      const int64_t slot = block.slot;
      if (absl::Status s = FetchRemote(*options_.transport, block.rank, bytes, {&slot, 1}, *host);
          !s.ok()) {
        return s;
      }
    } else {
      absl::StatusOr<comm::RmaTicket> get = options_.transport->PostGets(
          block.rank,
          {{*host, static_cast<uint64_t>(block.slot * bytes), static_cast<size_t>(bytes)}});
      if (!get.ok()) return get.status();
      if (absl::Status s = options_.transport->Wait(*get); !s.ok()) return s;
    }
    block.tier = Tier::kHost;
    block.pool = cluster::PoolTier::kHost;
    block.host = block.data = *host;
    block.rank = 0;
    block.slot = -1;
  }
  if (block.tier == Tier::kDevice || zero_copy_) return absl::OkStatus();
  if (block.copy_home != 0) {
    if (absl::Status s = device_->Wait(block.copy_home); !s.ok()) return s;
    if (absl::Status s = ReclaimFinishedCopies(); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<Block>> fresh = NewOpenBlock();
  if (!fresh.ok()) return fresh.status();
  const size_t bytes = static_cast<size_t>(geometry_.BlockBytes());
  absl::StatusOr<device::CopyTicket> ticket =
      device_->PostCopy(device::CopyDirection::kToDevice, {{(*fresh)->data, block.host, bytes}});
  if (!ticket.ok()) return ticket.status();
  if (absl::Status s = device_->Wait(*ticket); !s.ok()) return s;
  block.device_buffer = std::move((*fresh)->device_buffer);
  block.data = static_cast<uint8_t*>(block.device_buffer.data());
  block.tier = Tier::kDevice;
  ReleaseHostBlock(block.host);
  block.host = nullptr;
  return absl::OkStatus();
}

}  // namespace headwise::kv
