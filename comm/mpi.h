// MPI bootstrap and helpers: the session owner (init/finalize), a communicator
// owner, the one place MPI return codes become absl::Status, and a variable-size
// blob all-gather (UCX worker addresses, packed rkeys). Communicators we touch
// get MPI_ERRORS_RETURN so failures reach us as codes instead of aborting.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace headwise::comm {

// OK for MPI_SUCCESS; otherwise a Status naming `call` with MPI's error string
// and error class. Argument-like classes map to INVALID_ARGUMENT, out of memory
// to RESOURCE_EXHAUSTED, everything else to INTERNAL.
absl::Status MpiStatus(int code, std::string_view call);

// Evaluates an MPI call; on failure returns the Status from the enclosing
// function, naming the call's source text.
#define HEADWISE_MPI_RETURN_IF_ERROR(expr)                                    \
  do {                                                                        \
    if (const int headwise_mpi_rc_ = (expr); headwise_mpi_rc_ != MPI_SUCCESS) \
      return ::headwise::comm::MpiStatus(headwise_mpi_rc_, #expr);            \
  } while (false)

// Owns the process's MPI lifetime. Init asks for MPI_THREAD_MULTIPLE (memory
// ranks run a UCX progress thread next to MPI calls); the level actually given
// is in thread_level(). If MPI is already initialised (by a host program or an
// earlier session), the session adopts it and will not finalize it. Move-only;
// the destructor finalizes if this session initialised MPI, logging failures.
class MpiSession {
 public:
  // argc/argv may be null. Fails if MPI was already finalized (it cannot be
  // re-initialised) or a query fails. Sets MPI_ERRORS_RETURN on
  // MPI_COMM_WORLD and MPI_COMM_SELF.
  static absl::StatusOr<MpiSession> Init(int* argc, char*** argv);

  MpiSession(MpiSession&& other) noexcept;
  MpiSession& operator=(MpiSession&& other) noexcept;
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE, as provided by the library.
  int thread_level() const { return thread_level_; }
  bool thread_multiple() const { return thread_level_ >= MPI_THREAD_MULTIPLE; }
  // True if this session called MPI_Init_thread and so will finalize.
  bool owns_mpi() const { return owns_; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }

  // Finalizes now if this session owns MPI (collective over the world); later
  // calls and the destructor do nothing. Must be called from the thread that
  // initialised MPI, after every other owner of MPI objects is gone.
  absl::Status Finalize();

 private:
  MpiSession() = default;

  bool owns_ = false;
  int rank_ = 0;
  int size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
};

// A duplicated communicator with MPI_ERRORS_RETURN set, freed on destruction
// (skipped with a log line if MPI is already finalized). Move-only.
class MpiComm {
 public:
  // Collective over `parent`.
  static absl::StatusOr<MpiComm> Dup(MPI_Comm parent);

  MpiComm() = default;
  MpiComm(MpiComm&& other) noexcept;
  MpiComm& operator=(MpiComm&& other) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  ~MpiComm();

  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  void Reset();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
};

// Collective over `comm`: every rank contributes one blob of any size
// (including empty) and gets all of them back, indexed by rank. Sizes are
// exchanged first (MPI_Allgather), then the bytes (MPI_Allgatherv). Fails with
// RESOURCE_EXHAUSTED, on every rank alike, if a blob or the total exceeds
// MPI's int count.
absl::StatusOr<std::vector<std::vector<std::byte>>> AllgatherBlobs(std::span<const std::byte> mine,
                                                                   MPI_Comm comm);

}  // namespace headwise::comm
