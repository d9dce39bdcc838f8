// UcxTransport across 3 ranks (rank 0 coordinates, ranks 1-2 hold pools):
// random bytes put into and got from every memory rank's pool and checked on
// both sides, pool bounds, calls small and 8 MiB (eager and rendezvous),
// handler errors, stop_serving, exact traffic counters, and a silent peer
// timing out within peer_timeout. ctest runs the binary with UCX_TLS unset,
// =tcp and shared memory only (where kAuto falls back to kNone).
#include "comm/ucx_transport.h"

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "tests/mpi/mpi_test_env.h"

namespace headwise::comm {
namespace {

using headwise::testing::MpiTest;
using headwise::testing::Rank;
using headwise::testing::Seed;
using headwise::testing::Size;

constexpr int64_t kPool = int64_t{4} << 20;
constexpr size_t kBig = size_t{8} << 20;

// Same bytes on every rank for the same (owner, salt).
std::vector<uint8_t> RandomBytes(size_t n, int owner, uint64_t salt) {
  std::mt19937_64 gen(Seed() * 1000003 + static_cast<uint64_t>(owner) * 7919 + salt);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t word = gen();
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<uint8_t>(word >> (8 * j));
  }
  return out;
}

std::vector<std::byte> AsBytes(const std::string& s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

// Collective; null (with a failure recorded) if Create failed, on every rank.
std::unique_ptr<UcxTransport> MakeTransport(int64_t pool_bytes,
                                            absl::Duration timeout = absl::Seconds(10)) {
  UcxTransportOptions options;
  options.pool_bytes = pool_bytes;
  options.peer_timeout = timeout;
  absl::StatusOr<std::unique_ptr<UcxTransport>> t = UcxTransport::Create(MPI_COMM_WORLD, options);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

class UcxTransportTest : public MpiTest {
 protected:
  void SetUp() override { ASSERT_EQ(Size(), 3) << "run with mpirun -np 3"; }
};

// The regions rank 0 puts into and gets from on each memory rank (disjoint).
struct Region {
  uint64_t offset;
  size_t bytes;
};
const std::vector<Region> kPutRegions = {
    {0, 1000}, {12345, (size_t{1} << 20) + 3}, {kPool - 778, 777}};
const std::vector<Region> kGetRegions = {{size_t{2} << 20, (size_t{1} << 20) + 1}, {kPool - 1, 1}};

TEST_F(UcxTransportTest, PutsAndGetsEveryMemoryRankPool) {
  std::unique_ptr<UcxTransport> t = MakeTransport(kPool);
  if (!t) return;
  ASSERT_EQ(t->peers().size(), 3u);
  for (const PeerInfo& p : t->peers()) {
    EXPECT_EQ(p.pool_bytes, kPool);
    EXPECT_FALSE(p.hostname.empty());
  }
  ASSERT_NE(t->pool(), nullptr);

  // Rank 0 puts random bytes into both memory ranks (posted together).
  std::vector<std::vector<std::vector<uint8_t>>> sources(3);
  if (Rank() == 0) {
    std::vector<RmaTicket> tickets;
    for (int r = 1; r < 3; ++r) {
      std::vector<RmaItem> items;
      for (size_t i = 0; i < kPutRegions.size(); ++i) {
        sources[r].push_back(RandomBytes(kPutRegions[i].bytes, r, 100 + i));
        items.push_back({sources[r].back().data(), kPutRegions[i].offset, kPutRegions[i].bytes});
      }
      absl::StatusOr<RmaTicket> ticket = t->PostPuts(r, items);
      EXPECT_TRUE(ticket.ok()) << ticket.status();
      if (ticket.ok()) tickets.push_back(*ticket);
    }
    for (RmaTicket ticket : tickets) HW_EXPECT_OK(t->Wait(ticket));
  }
  MPI_Barrier(MPI_COMM_WORLD);

  // Memory ranks see the puts, and nothing else changed; then they fill the
  // regions rank 0 will get.
  if (Rank() != 0) {
    const uint8_t* pool = t->pool();
    for (size_t i = 0; i < kPutRegions.size(); ++i) {
      const std::vector<uint8_t> want = RandomBytes(kPutRegions[i].bytes, Rank(), 100 + i);
      EXPECT_EQ(std::memcmp(pool + kPutRegions[i].offset, want.data(), want.size()), 0)
          << "put region " << i << " differs at the target";
    }
    size_t stray = 0;
    for (uint64_t b = 1000; b < 12345; ++b) stray += pool[b] != 0;
    EXPECT_EQ(stray, 0u) << "bytes between put regions changed";
    for (size_t i = 0; i < kGetRegions.size(); ++i) {
      const std::vector<uint8_t> mine = RandomBytes(kGetRegions[i].bytes, Rank(), 200 + i);
      std::memcpy(t->pool() + kGetRegions[i].offset, mine.data(), mine.size());
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);

  if (Rank() == 0) {
    for (int r = 1; r < 3; ++r) {
      std::vector<std::vector<uint8_t>> got;
      std::vector<RmaItem> items;
      for (const Region& region : kGetRegions) {
        got.emplace_back(region.bytes, 0xee);  // poisoned
        items.push_back({got.back().data(), region.offset, region.bytes});
      }
      // Read the put regions back too.
      for (const Region& region : kPutRegions) {
        got.emplace_back(region.bytes, 0xee);
        items.push_back({got.back().data(), region.offset, region.bytes});
      }
      absl::StatusOr<RmaTicket> ticket = t->PostGets(r, items);
      ASSERT_TRUE(ticket.ok()) << ticket.status();
      HW_EXPECT_OK(t->Wait(*ticket));
      for (size_t i = 0; i < kGetRegions.size(); ++i) {
        EXPECT_EQ(got[i], RandomBytes(kGetRegions[i].bytes, r, 200 + i)) << "rank " << r;
      }
      for (size_t i = 0; i < kPutRegions.size(); ++i) {
        EXPECT_EQ(got[kGetRegions.size() + i], sources[r][i]) << "rank " << r;
      }
      int64_t put_bytes = 0, get_bytes = 0;
      for (const Region& region : kPutRegions) put_bytes += region.bytes;
      for (const Region& region : kGetRegions) get_bytes += region.bytes;
      const PeerTraffic traffic = t->traffic(r);
      EXPECT_EQ(traffic.bytes_sent, put_bytes);
      EXPECT_EQ(traffic.bytes_received, get_bytes + put_bytes);
      EXPECT_EQ(traffic.calls, 0);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(UcxTransportTest, ItemsOutsideThePoolAreInvalidArgument) {
  std::unique_ptr<UcxTransport> t = MakeTransport(kPool);
  if (!t) return;
  std::vector<uint8_t> buffer(64);
  if (Rank() == 0) {
    absl::StatusOr<RmaTicket> past_end = t->PostGets(1, {{buffer.data(), kPool - 10, 11}});
    EXPECT_TRUE(absl::IsInvalidArgument(past_end.status())) << past_end.status();
    const std::string message(past_end.status().message());
    for (const char* part : {"rank 1", "offset 4194294", "11 bytes", "4194304 bytes"}) {
      EXPECT_NE(message.find(part), std::string::npos) << message << " lacks " << part;
    }
    // offset + bytes wraps around 2^64.
    absl::StatusOr<RmaTicket> wraps = t->PostPuts(2, {{buffer.data(), UINT64_MAX - 1, 4}});
    EXPECT_TRUE(absl::IsInvalidArgument(wraps.status())) << wraps.status();
    absl::StatusOr<RmaTicket> one_past =
        t->PostGets(2, {{buffer.data(), 0, 8}, {buffer.data(), kPool, 1}});
    EXPECT_TRUE(absl::IsInvalidArgument(one_past.status())) << one_past.status();
    EXPECT_TRUE(absl::IsInvalidArgument(t->PostGets(0, {{buffer.data(), 0, 8}}).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(t->PostGets(3, {{buffer.data(), 0, 8}}).status()));
    // Empty and zero-byte items are fine.
    absl::StatusOr<RmaTicket> empty = t->PostGets(1, {{buffer.data(), kPool, 0}});
    ASSERT_TRUE(empty.ok()) << empty.status();
    HW_EXPECT_OK(t->Wait(*empty));
    EXPECT_TRUE(absl::IsNotFound(t->Wait(*empty))) << "a ticket is retired by Wait";
    for (int r = 1; r < 3; ++r) {
      EXPECT_EQ(t->traffic(r).bytes_sent + t->traffic(r).bytes_received, 0);
    }
  } else {
    // Memory ranks have no endpoints to each other.
    EXPECT_TRUE(absl::IsInvalidArgument(t->PostGets(3 - Rank(), {{buffer.data(), 0, 8}}).status()));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Memory ranks' handler: 'X' + payload -> payload bytes + rank; 'E' -> error;
// 'Z' -> sleeps 2.5 s, then answers; 'S' -> "bye" and stop.
absl::StatusOr<CallReply> Handler(std::span<const std::byte> request) {
  if (request.empty()) return absl::InvalidArgumentError("empty request");
  CallReply reply;
  switch (static_cast<char>(request[0])) {
    case 'X':
      reply.bytes.assign(request.begin() + 1, request.end());
      for (std::byte& b : reply.bytes) b = static_cast<std::byte>(static_cast<uint8_t>(b) + Rank());
      return reply;
    case 'E':
      return absl::FailedPreconditionError("refused by the handler");
    case 'Z':
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      reply.bytes = AsBytes("late");
      return reply;
    case 'S':
      reply.bytes = AsBytes("bye");
      reply.stop_serving = true;
      return reply;
    default:
      return absl::InvalidArgumentError("unknown request");
  }
}

std::vector<std::byte> TransformRequest(size_t n, int rank, uint64_t salt) {
  std::vector<uint8_t> payload = RandomBytes(n, rank, salt);
  std::vector<std::byte> request(n + 1);
  request[0] = std::byte{'X'};
  std::memcpy(request.data() + 1, payload.data(), n);
  return request;
}

TEST_F(UcxTransportTest, CallsSmallAndLargeErrorsAndStop) {
  std::unique_ptr<UcxTransport> t = MakeTransport(kPool);
  if (!t) return;
  if (Rank() != 0) {
    HW_EXPECT_OK(t->Serve(Handler));
    MPI_Barrier(MPI_COMM_WORLD);
    return;
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(t->Serve(Handler)));
  const std::vector<size_t> sizes = {100, kBig};
  // Every call to both ranks in flight at once.
  std::vector<std::vector<std::byte>> replies(4);
  std::vector<RmaTicket> tickets;
  for (int r = 1; r < 3; ++r) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      absl::StatusOr<RmaTicket> ticket =
          t->PostCall(r, TransformRequest(sizes[i], r, i), &replies[(r - 1) * 2 + i]);
      ASSERT_TRUE(ticket.ok()) << ticket.status();
      tickets.push_back(*ticket);
    }
  }
  for (RmaTicket ticket : tickets) HW_EXPECT_OK(t->Wait(ticket));
  for (int r = 1; r < 3; ++r) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<uint8_t> want = RandomBytes(sizes[i], r, i);
      for (uint8_t& b : want) b = static_cast<uint8_t>(b + r);
      const std::vector<std::byte>& got = replies[(r - 1) * 2 + i];
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0) << "rank " << r << " " << i;
    }
    const PeerTraffic traffic = t->traffic(r);
    EXPECT_EQ(traffic.calls, 2);
    EXPECT_EQ(traffic.bytes_sent, static_cast<int64_t>(100 + 1 + kBig + 1));
    EXPECT_EQ(traffic.bytes_received, static_cast<int64_t>(100 + kBig));
  }

  // A handler error comes back with its code, prefixed with the rank.
  std::vector<std::byte> reply;
  absl::StatusOr<RmaTicket> refused = t->PostCall(2, AsBytes("E"), &reply);
  ASSERT_TRUE(refused.ok()) << refused.status();
  const absl::Status error = t->Wait(*refused);
  EXPECT_TRUE(absl::IsFailedPrecondition(error)) << error;
  EXPECT_EQ(error.message(), "rank 2: refused by the handler");
  EXPECT_EQ(t->traffic(2).calls, 3);
  EXPECT_EQ(t->traffic(2).bytes_sent, static_cast<int64_t>(100 + 1 + kBig + 1 + 1));

  // Informational: round trip of a small call, and of a 64 KiB get.
  {
    constexpr int kRounds = 200;
    absl::Time begin = absl::Now();
    for (int i = 0; i < kRounds; ++i) {
      absl::StatusOr<RmaTicket> ticket = t->PostCall(1, TransformRequest(16, 1, 0), &reply);
      ASSERT_TRUE(ticket.ok()) << ticket.status();
      HW_ASSERT_OK(t->Wait(*ticket));
    }
    const double call_us = absl::ToDoubleMicroseconds(absl::Now() - begin) / kRounds;
    std::vector<uint8_t> got(kPool);
    begin = absl::Now();
    for (int i = 0; i < 10; ++i) {
      absl::StatusOr<RmaTicket> ticket = t->PostGets(1, {{got.data(), 0, got.size()}});
      ASSERT_TRUE(ticket.ok()) << ticket.status();
      HW_ASSERT_OK(t->Wait(*ticket));
    }
    const double get_gbps = 10.0 * kPool / absl::ToDoubleSeconds(absl::Now() - begin) / 1e9;
    const char* tls = std::getenv("UCX_TLS");
    std::printf("UCX_TLS=%s: small call %.0f us (mean of %d), 4 MiB get %.2f GB/s\n",
                tls ? tls : "(unset)", call_us, kRounds, get_gbps);
  }

  for (int r = 1; r < 3; ++r) {
    absl::StatusOr<RmaTicket> stop = t->PostCall(r, AsBytes("S"), &reply);
    ASSERT_TRUE(stop.ok()) << stop.status();
    HW_EXPECT_OK(t->Wait(*stop));
    EXPECT_EQ(reply, AsBytes("bye"));
  }
  MPI_Barrier(MPI_COMM_WORLD);  // memory ranks reach it only once Serve returned
}

TEST_F(UcxTransportTest, SilentPeerIsUnavailableAfterPeerTimeout) {
  const absl::Duration timeout = absl::Seconds(1);
  std::unique_ptr<UcxTransport> t = MakeTransport(kPool, timeout);
  if (!t) return;
  if (Rank() != 0) {
    HW_EXPECT_OK(t->Serve(Handler));
    MPI_Barrier(MPI_COMM_WORLD);
    return;
  }
  const absl::Time start = absl::Now();
  {
    // Freed right after the timeout: the late reply must not land in it.
    auto late = std::make_unique<std::vector<std::byte>>();
    absl::StatusOr<RmaTicket> ticket = t->PostCall(1, AsBytes("Z"), late.get());
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    const absl::Status status = t->Wait(*ticket);
    const absl::Duration waited = absl::Now() - start;
    EXPECT_TRUE(absl::IsUnavailable(status)) << status;
    EXPECT_NE(status.message().find("rank 1 did not answer within 1s"), std::string::npos)
        << status;
    EXPECT_GE(waited, timeout);
    EXPECT_LE(waited, timeout + absl::Milliseconds(700));
  }
  // Rank 2 still answers meanwhile.
  std::vector<std::byte> reply;
  absl::StatusOr<RmaTicket> stop2 = t->PostCall(2, AsBytes("S"), &reply);
  ASSERT_TRUE(stop2.ok()) << stop2.status();
  HW_EXPECT_OK(t->Wait(*stop2));
  // Once rank 1's handler is done (2.5 s), it answers again.
  std::this_thread::sleep_for(
      absl::ToChronoMilliseconds(start + absl::Milliseconds(2800) - absl::Now()));
  absl::StatusOr<RmaTicket> stop1 = t->PostCall(1, AsBytes("S"), &reply);
  ASSERT_TRUE(stop1.ok()) << stop1.status();
  HW_EXPECT_OK(t->Wait(*stop1));
  EXPECT_EQ(reply, AsBytes("bye"));
  EXPECT_EQ(t->traffic(1).calls, 2);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(UcxTransportTest, PoolSizesAndErrorModeAreShared) {
  // Rank r offers r MiB: rank 0 has no pool.
  std::unique_ptr<UcxTransport> t = MakeTransport(int64_t{Rank()} << 20);
  if (!t) return;
  for (int r = 0; r < 3; ++r) EXPECT_EQ(t->peers()[r].pool_bytes, int64_t{r} << 20);
  EXPECT_EQ(t->pool() == nullptr, Rank() == 0);
  int mode = static_cast<int>(t->error_mode());
  std::vector<int> modes(3);
  MPI_Allgather(&mode, 1, MPI_INT, modes.data(), 1, MPI_INT, MPI_COMM_WORLD);
  EXPECT_EQ(modes[0], modes[1]);
  EXPECT_EQ(modes[0], modes[2]);
  EXPECT_NE(t->error_mode(), UcxTransportOptions::ErrorMode::kAuto);
  if (Rank() == 0) {
    const char* tls = std::getenv("UCX_TLS");
    std::printf("UCX_TLS=%s: error mode %s\n", tls ? tls : "(unset)",
                t->error_mode() == UcxTransportOptions::ErrorMode::kPeer ? "peer" : "none");
    std::vector<uint8_t> got(16, 0xee);
    absl::StatusOr<RmaTicket> ticket = t->PostGets(2, {{got.data(), (2 << 20) - 16, 16}});
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    HW_EXPECT_OK(t->Wait(*ticket));
    EXPECT_EQ(got, std::vector<uint8_t>(16, 0));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace headwise::comm
