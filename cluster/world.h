// How this process was launched: its rank and the world size as the launcher
// (OpenMPI's mpirun, Slurm's srun, or a PMIx server) announces them in the
// environment, read before MPI is initialised so single-process runs never
// need MPI at all. Roles follow DESIGN.md: rank 0 is the coordinator, every
// rank is a memory rank.
#pragma once

#include <string>

namespace headwise::cluster {

enum class Launcher { kNone, kOpenMpi, kSlurm, kPmix };

struct LaunchInfo {
  Launcher launcher = Launcher::kNone;
  int rank = 0;
  int world_size = 1;
  std::string hostname;

  bool is_coordinator() const { return rank == 0; }
  bool is_distributed() const { return world_size > 1; }
};

// Reads OMPI_COMM_WORLD_{RANK,SIZE}, then PMIX_RANK + PMIX_SIZE/OMPI_UNIVERSE_SIZE,
// then SLURM_PROCID/SLURM_NTASKS; a plain process is rank 0 of 1. Malformed
// values are ignored (treated as absent) rather than trusted.
LaunchInfo DetectLaunch();

const char* LauncherName(Launcher launcher);

}  // namespace headwise::cluster
