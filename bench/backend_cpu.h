// The CPU backend of moe-bench: MoEForwardCpu against MoEForwardNaiveLoopCpu, with host memory
// and the steady clock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "bench/backend.h"

namespace moe::bench {

std::unique_ptr<BenchBackend> MakeCpuBackend();

// MemAvailable of /proc/meminfo in bytes, or nullopt where it cannot be read.
std::optional<int64_t> AvailableHostMemory();

// The 1-minute load average of /proc/loadavg, or nullopt where it cannot be read. Benchmarks
// on a shared host are only as quiet as this says.
std::optional<double> HostLoadAverage();

}  // namespace moe::bench
