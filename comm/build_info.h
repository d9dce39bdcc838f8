// What this build of the transports was compiled with: the NCCL version on
// CUDA builds (NCCL collectives arrive with the CUDA backend), and MPI/UCX
// library versions, for `headwise --version` and logs.
#pragma once

#include <string>

namespace headwise::comm {

// E.g. "MPI 3.1 (Open MPI v4.1.4), UCX 1.13.1, NCCL 2.28.3" or "..., no NCCL".
std::string TransportVersions();

}  // namespace headwise::comm
