// Versions are read from the libraries at run time (not only the headers), so
// a mismatched shared library shows up in `headwise --version`.
#include "comm/build_info.h"

#include <mpi.h>
#include <ucp/api/ucp.h>

#include <string>

#ifdef HEADWISE_HAVE_NCCL
#include <nccl.h>
#endif

namespace headwise::comm {

std::string TransportVersions() {
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  char library[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(library, &length);
  std::string mpi_library(library, static_cast<size_t>(length));
  if (size_t comma = mpi_library.find(','); comma != std::string::npos) mpi_library.resize(comma);
  unsigned ucx_major = 0, ucx_minor = 0, ucx_release = 0;
  ucp_get_version(&ucx_major, &ucx_minor, &ucx_release);
  std::string out = "MPI " + std::to_string(major) + "." + std::to_string(minor) + " (" +
                    mpi_library + "), UCX " + std::to_string(ucx_major) + "." +
                    std::to_string(ucx_minor) + "." + std::to_string(ucx_release);
#ifdef HEADWISE_HAVE_NCCL
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) {
    out += ", NCCL " + std::to_string(nccl / 10000) + "." + std::to_string(nccl / 100 % 100) + "." +
           std::to_string(nccl % 100);
  } else {
    out += ", NCCL (version unavailable)";
  }
#else
  out += ", no NCCL (CPU-only build)";
#endif
  return out;
}

}  // namespace headwise::comm
