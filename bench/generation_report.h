// moe-generation-bench's output: the table of its runs, the continuous/static ratios the
// generation target is stated in, and the same as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/generation_load.h"

namespace moe::bench {

struct GenerationBenchSetup {
  std::string model;    // directory
  std::string backend;  // "cpu" / "cuda"
  std::string device;
  GenerationLoadOptions load;  // streams unused: each run has its own
};

struct GenerationRun {
  std::string batching;  // "continuous", "static", "static-early-exit"
  int64_t kv_cache_blocks = 0;
  GenerationLoadReport report;
};

// A header naming the setup, a Markdown table with a row per run, then for the most streams
// run, "output tokens/s at N streams, continuous / B = c / b = r" for each static policy B
// run at N, with the target (>= 3 at 32 streams against static) said met or not.
std::string FormatGenerationTable(const GenerationBenchSetup& setup,
                                  const std::vector<GenerationRun>& runs);

// {"setup": {...}, "runs": [{...}, ...]} with every figure of the table and more.
std::string GenerationRunsJson(const GenerationBenchSetup& setup,
                               const std::vector<GenerationRun>& runs);

}  // namespace moe::bench
