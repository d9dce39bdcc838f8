# Every third-party dependency, found once here. All come from Debian
# packages installed by scripts/install-deps; CUDA and NCCL from /usr/local/cuda.
find_package(Threads REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(ucx CONFIG REQUIRED)
find_package(Protobuf REQUIRED)          # Debian ships no protobuf CMake config
find_package(gRPC CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(tomlplusplus CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)

if(HEADWISE_CUDA_ENABLED)
  find_package(CUDAToolkit REQUIRED)
  find_library(HEADWISE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
  find_path(HEADWISE_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
endif()

find_package(Python3 COMPONENTS Interpreter)
