// Derived figures of one benchmark case (rates, fractions of the ceilings) and their two
// renderings: a table for people and one JSON object per case for scripts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "bench/backend.h"
#include "bench/shapes.h"
#include "moe/kernels/dtype.h"
#include "nlohmann/json.hpp"

namespace moe::bench {

struct CaseReport {
  std::string backend;
  std::string device;
  MoEShape shape;
  int64_t tokens = 0;
  kernels::DType dtype = kernels::DType::kF32;
  RunOptions run;
  Ceilings ceilings;
  std::optional<double> host_load_average;  // 1-minute load average when the run started
  CaseResult result;

  // Derived by Derive().
  double flops = 0.0;                      // MoEForwardFlops: router + computed assignments
  int64_t active_experts = 0;              // experts that received >= 1 token
  int64_t weight_bytes_read = 0;           // active experts' weights + router
  double tflops = 0.0;                     // flops / median
  double weight_gbps = 0.0;                // weight_bytes_read / median
  double dense_gemm_fraction = 0.0;        // tflops / dense GEMM ceiling
  double copy_bw_fraction = 0.0;           // weight_gbps / copy ceiling (read + write bytes)
  double read_bw_fraction = 0.0;           // weight_gbps / read ceiling (bytes read)
  std::optional<double> speedup_vs_naive;  // naive median / fast median
  std::optional<double> profiling_cost;    // profiled median / fast median
  std::optional<double> expert_ms_sum;     // sum of the last profiled call's expert times
};

// The ceilings measured before and after the cases combined: each ceiling is the highest of its
// measurements, so that a neighbour's load during one of them does not inflate the fractions.
Ceilings BestCeilings(const Ceilings& before, const Ceilings& after);

// The largest relative difference between the measurements of one ceiling (0.25 = the lower
// was 25% below the higher). Above kNoisyCeilingSpread the host was busy with other work during
// the run and every figure of it is suspect.
double CeilingSpread(const Ceilings& ceilings);
inline constexpr double kNoisyCeilingSpread = 0.15;

// "f32", "bf16", "f16": the spelling --dtype takes.
std::string DTypeLabel(kernels::DType dtype);

// Fills the derived fields from the measured ones.
void Derive(CaseReport& report);

// The run's header: machine, backend, ceilings and the conventions behind the columns.
std::string TableHeader(const std::string& backend, const std::string& device,
                        const Ceilings& ceilings, const RunOptions& run,
                        std::optional<double> host_load_average);
std::string TableColumns();
std::string TableRow(const CaseReport& report);

nlohmann::json ToJson(const CaseReport& report);

}  // namespace moe::bench
