// MPI session/communicator owners, MPI error → Status, and AllgatherBlobs.
// Error handlers are switched to MPI_ERRORS_RETURN right after init so that a
// failing call (bad argument, lost peer) comes back as a code we can report.
#include "comm/mpi.h"

#include <climits>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace headwise::comm {
namespace {

bool MpiIsLive() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

}  // namespace

absl::Status MpiStatus(int code, std::string_view call) {
  if (code == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  int error_class = code;
  if (MPI_Error_class(code, &error_class) != MPI_SUCCESS) error_class = code;
  std::string message = absl::StrCat(std::string(call), " failed: ", std::string(text, len),
                                     " (MPI error class ", error_class, ")");
  switch (error_class) {
    case MPI_ERR_ARG:
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_COMM:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_OP:
    case MPI_ERR_GROUP:
    case MPI_ERR_DIMS:
      return absl::InvalidArgumentError(message);
    case MPI_ERR_NO_MEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

// ---- MpiSession -------------------------------------------------------------

absl::StatusOr<MpiSession> MpiSession::Init(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Finalized(&finalized));
  if (finalized) {
    return absl::FailedPreconditionError("MPI was already finalized; it cannot be re-initialised");
  }
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Initialized(&initialized));

  MpiSession session;
  if (!initialized) {
    // Errors here go through MPI's default handler (there is no communicator
    // to set ours on yet); OpenMPI aborts itself if it cannot start.
    int provided = MPI_THREAD_SINGLE;
    HEADWISE_MPI_RETURN_IF_ERROR(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    session.owns_ = true;
  }
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Query_thread(&session.thread_level_));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_rank(MPI_COMM_WORLD, &session.rank_));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_size(MPI_COMM_WORLD, &session.size_));
  if (!session.thread_multiple()) {
    spdlog::warn(
        "rank {}: MPI provides thread level {} (< MPI_THREAD_MULTIPLE); only one thread "
        "may call MPI at a time",
        session.rank_, session.thread_level_);
  }
  return session;
}

MpiSession::MpiSession(MpiSession&& other) noexcept
    : owns_(std::exchange(other.owns_, false)),
      rank_(other.rank_),
      size_(other.size_),
      thread_level_(other.thread_level_) {}

MpiSession& MpiSession::operator=(MpiSession&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Finalize(); !s.ok()) spdlog::error("MpiSession: {}", s.ToString());
    owns_ = std::exchange(other.owns_, false);
    rank_ = other.rank_;
    size_ = other.size_;
    thread_level_ = other.thread_level_;
  }
  return *this;
}

MpiSession::~MpiSession() {
  if (absl::Status s = Finalize(); !s.ok()) spdlog::error("MpiSession: {}", s.ToString());
}

absl::Status MpiSession::Finalize() {
  if (!std::exchange(owns_, false)) return absl::OkStatus();
  if (!MpiIsLive()) return absl::OkStatus();
  // MPI_Finalize first deletes MPI_COMM_SELF's attributes, which is where
  // cached comm objects (e.g. the LSE reduction op) free themselves.
  return MpiStatus(MPI_Finalize(), "MPI_Finalize");
}

// ---- MpiComm ----------------------------------------------------------------

absl::StatusOr<MpiComm> MpiComm::Dup(MPI_Comm parent) {
  MpiComm out;
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_dup(parent, &out.comm_));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(out.comm_, MPI_ERRORS_RETURN));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_rank(out.comm_, &out.rank_));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_size(out.comm_, &out.size_));
  return out;
}

MpiComm::MpiComm(MpiComm&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)), rank_(other.rank_), size_(other.size_) {}

MpiComm& MpiComm::operator=(MpiComm&& other) noexcept {
  if (this != &other) {
    Reset();
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    size_ = other.size_;
  }
  return *this;
}

MpiComm::~MpiComm() { Reset(); }

void MpiComm::Reset() {
  if (comm_ == MPI_COMM_NULL) return;
  if (!MpiIsLive()) {
    spdlog::warn("MpiComm: communicator outlived MPI; not freed");
  } else if (absl::Status s = MpiStatus(MPI_Comm_free(&comm_), "MPI_Comm_free"); !s.ok()) {
    spdlog::error("MpiComm: {}", s.ToString());
  }
  comm_ = MPI_COMM_NULL;
}

// ---- AllgatherBlobs ---------------------------------------------------------

absl::StatusOr<std::vector<std::vector<std::byte>>> AllgatherBlobs(std::span<const std::byte> mine,
                                                                   MPI_Comm comm) {
  int size = 0;
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_size(comm, &size));
  const int64_t my_size = static_cast<int64_t>(mine.size());
  std::vector<int64_t> sizes(size, 0);
  HEADWISE_MPI_RETURN_IF_ERROR(
      MPI_Allgather(&my_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm));

  // Every rank sees the same sizes, so every rank takes the same branch here.
  std::vector<int> counts(size, 0), displs(size, 0);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    if (sizes[r] < 0 || sizes[r] > INT_MAX || total + sizes[r] > INT_MAX) {
      return absl::ResourceExhaustedError(
          absl::StrCat("AllgatherBlobs: blob of rank ", r, " (", sizes[r],
                       " bytes) takes the total past MPI's int count limit (", INT_MAX, ")"));
    }
    counts[r] = static_cast<int>(sizes[r]);
    displs[r] = static_cast<int>(total);
    total += sizes[r];
  }
  std::vector<std::byte> all(static_cast<size_t>(total));
  // MPI wants a non-null send buffer even for zero bytes on some builds.
  const std::byte dummy{};
  const void* send = mine.empty() ? &dummy : mine.data();
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Allgatherv(send, static_cast<int>(my_size), MPI_BYTE,
                                              all.empty() ? nullptr : all.data(), counts.data(),
                                              displs.data(), MPI_BYTE, comm));
  std::vector<std::vector<std::byte>> out(size);
  for (int r = 0; r < size; ++r) {
    out[r].assign(all.begin() + displs[r], all.begin() + displs[r] + counts[r]);
  }
  return out;
}

}  // namespace headwise::comm
