// Describes the machine a benchmark ran on, for the JSON every benchmark
// writes: hostname, CPU model, cores, memory, and the GPU when one is visible.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace headwise::bench {

nlohmann::json MachineInfo();

// STREAM-style triad a[i] = b[i] + s * c[i] over three arrays of `bytes_per_array`
// bytes, split over `threads` threads; best of `repeats`, in GB/s counting
// 3 * bytes_per_array per pass (reads of b, c and the write of a).
// Writes `report` (indented JSON) to `path`, or to stdout when `path` is
// empty. False when the file cannot be written.
bool WriteReport(const nlohmann::json& report, const std::string& path);

double TriadGBps(size_t bytes_per_array, int threads, int repeats);

}  // namespace headwise::bench
