// Sizing a KV-cache pool from the memory left once a model is loaded (--kv-cache-memory-fraction),
// the way vLLM's gpu_memory_utilization does, rather than as a fixed byte count.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/engine/moe_backend.h"

namespace moe::engine {

// `fraction` (0 < fraction <= kMaxKvCacheMemoryFraction) of the memory free where the pool will
// live: on the CUDA backend the device's free memory (total minus used, all processes), on the
// CPU backend the host's MemAvailable (/proc/meminfo). INVALID_ARGUMENT for a fraction out of
// range; the backend's or /proc's error when the memory cannot be read; FAILED_PRECONDITION when
// the result is 0 bytes.
absl::StatusOr<uint64_t> KvCacheBytesForFraction(double fraction, const MoEBackend& backend);

// The largest fraction accepted: the rest is left for activations, workspaces and the runtime.
inline constexpr double kMaxKvCacheMemoryFraction = 0.95;

// MemAvailable of a /proc/meminfo text, in bytes. NOT_FOUND when the line is missing,
// INVALID_ARGUMENT when it does not read "MemAvailable: <number> kB".
absl::StatusOr<uint64_t> ParseMemAvailable(std::string_view meminfo);

}  // namespace moe::engine
