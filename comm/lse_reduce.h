// Exact combination of partial attentions across ranks: an LSE merge as a
// commutative user MPI_Op over a "row record" datatype (dim floats of o, then
// the row's lse). Used to merge delegate-mode partials from memory ranks.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "absl/status/status.h"

namespace headwise::comm {

// Collective over `comm`, in place: on entry (o, lse) is this rank's partial
// (o rows x dim row-major, lse rows; an empty partial is lse = -inf, o = 0);
// on return every rank holds the merge of all ranks' partials. `rows` and
// `dim` must be equal on every rank; rows == 0 returns at once on every rank.
// Fails with INVALID_ARGUMENT for dim < 1, rows < 0 or sizes past MPI's int
// counts, FAILED_PRECONDITION if MPI is not running, or the MPI call's error
// (the communicator should have MPI_ERRORS_RETURN, see MpiSession/MpiComm).
// Thread-safe under MPI_THREAD_MULTIPLE (each call packs into its own buffer).
absl::Status LseAllreduce(float* o, float* lse, int64_t rows, int64_t dim, MPI_Comm comm);

// As LseAllreduce, but only `root` receives the merge; other ranks' buffers are
// left unchanged. INVALID_ARGUMENT if root is not a rank of `comm`.
absl::Status LseReduce(float* o, float* lse, int64_t rows, int64_t dim, int root, MPI_Comm comm);

}  // namespace headwise::comm
