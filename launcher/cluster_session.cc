// Start-up order: MPI (thread-multiple: the transport's progress thread runs
// beside MPI), the transport (collective: addresses, pools and rkeys are
// all-gathered), then rank 0's probes. Shutdown: the transport goes before
// MPI_Finalize.
#include "launcher/cluster_session.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "spdlog/spdlog.h"

namespace headwise::launcher {

absl::StatusOr<std::unique_ptr<ClusterSession>> ClusterSession::Start(
    const cluster::LaunchInfo& launch, int64_t pool_bytes, absl::Duration peer_timeout,
    kv::DiskTierOptions disk) {
  std::unique_ptr<ClusterSession> session(new ClusterSession());
  session->disk_ = std::move(disk);
  absl::StatusOr<comm::MpiSession> mpi = comm::MpiSession::Init(nullptr, nullptr);
  if (!mpi.ok()) return mpi.status();
  session->mpi_.emplace(std::move(*mpi));
  comm::UcxTransportOptions options;
  options.pool_bytes = launch.rank == 0 ? 0 : (pool_bytes > 0 ? pool_bytes : kDefaultPoolBytes);
  options.peer_timeout = peer_timeout;
  absl::StatusOr<std::unique_ptr<comm::UcxTransport>> transport =
      comm::UcxTransport::Create(MPI_COMM_WORLD, options);
  if (!transport.ok()) return transport.status();
  session->transport_ = std::move(*transport);
  if (!session->coordinator()) return session;

  absl::StatusOr<cluster::CostModel> costs = attention::ProbeCluster(*session->transport_);
  if (!costs.ok()) return costs.status();
  session->costs_ = std::move(*costs);
  if (session->disk_.bytes > 0) {
    absl::StatusOr<double> gbps = kv::MeasureSequentialReadGbps(
        session->disk_.dir, std::min<int64_t>(session->disk_.bytes, int64_t{64} << 20));
    if (!gbps.ok()) return gbps.status();
    session->costs_.ranks[0].disk_bytes = session->disk_.bytes;
    session->costs_.ranks[0].disk_read_gbps = *gbps;
  }
  const std::vector<comm::PeerInfo>& peers = session->transport_->peers();
  std::fprintf(stderr, "cluster: %zu ranks, UCX error mode %s\n", peers.size(),
               session->transport_->error_mode() == comm::UcxTransportOptions::ErrorMode::kPeer
                   ? "peer"
                   : "none (a lost rank shows as a timeout)");
  for (size_t r = 0; r < peers.size(); ++r) {
    const cluster::RankProbe& probe = session->costs_.ranks[r];
    if (r == 0) {
      std::fprintf(stderr, "  rank 0 on %s: coordinator, attention %.2f GB/s\n",
                   peers[0].hostname.c_str(), probe.attention_gbps);
    } else {
      std::fprintf(stderr,
                   "  rank %zu on %s: pool %.2f GiB, attention %.2f GB/s, link %.2f GB/s, "
                   "rtt %.0f us\n",
                   r, peers[r].hostname.c_str(), peers[r].pool_bytes / double(1 << 30),
                   probe.attention_gbps, probe.link_gbps, probe.rtt_seconds * 1e6);
    }
    if (probe.disk_bytes > 0) {
      std::fprintf(stderr, "  rank %zu disk tier: %.2f GiB, sequential read %.2f GB/s\n", r,
                   probe.disk_bytes / double(1 << 30), probe.disk_read_gbps);
    }
  }
  return session;
}

ClusterSession::~ClusterSession() {
  transport_.reset();
  if (mpi_) {
    if (absl::Status s = mpi_->Finalize(); !s.ok()) spdlog::warn("MPI_Finalize: {}", s.ToString());
  }
}

int ClusterSession::ServeMemoryRank(int threads) {
  runtime::ThreadPool pool(threads);
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(&pool);
  attention::MemoryRank rank(*transport_, *cpu, disk_);
  if (absl::Status s = rank.Serve(); !s.ok()) {
    std::fprintf(stderr, "headwise: memory rank %d: %s\n", transport_->rank(),
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

absl::Status ClusterSession::StopMemoryRanks() { return attention::StopMemoryRanks(*transport_); }

void ClusterSession::Abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace headwise::launcher
