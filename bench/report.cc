#include "bench/report.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/host_layer.h"
#include "moe/kernels/moe_layer.h"

namespace moe::bench {
namespace {

constexpr char kCopyConvention[] =
    "copy bandwidth counts bytes read + bytes written (STREAM Copy convention); read bandwidth "
    "and weight GB/s count only bytes read";

// "0.240 and 0.237": every measurement of one ceiling, `decimals` after the point.
std::string JoinMeasurements(const std::vector<double>& values, int decimals) {
  return absl::StrJoin(values, " and ", [decimals](std::string* out, double v) {
    absl::StrAppendFormat(out, "%.*f", decimals, v);
  });
}

}  // namespace

std::string DTypeLabel(kernels::DType dtype) {
  return absl::AsciiStrToLower(std::string(kernels::DTypeName(dtype)));
}

Ceilings BestCeilings(const Ceilings& before, const Ceilings& after) {
  Ceilings best;
  best.dense_gemm_tflops = std::max(before.dense_gemm_tflops, after.dense_gemm_tflops);
  best.copy_gbps = std::max(before.copy_gbps, after.copy_gbps);
  best.read_gbps = std::max(before.read_gbps, after.read_gbps);
  best.dense_gemm_method = absl::StrCat(before.dense_gemm_method,
                                        "; best of the measurements before and after the cases");
  best.copy_method =
      absl::StrCat(before.copy_method, "; best of the measurements before and after the cases");
  best.read_method =
      absl::StrCat(before.read_method, "; best of the measurements before and after the cases");
  best.dense_gemm_tflops_each = {before.dense_gemm_tflops, after.dense_gemm_tflops};
  best.copy_gbps_each = {before.copy_gbps, after.copy_gbps};
  best.read_gbps_each = {before.read_gbps, after.read_gbps};
  return best;
}

double CeilingSpread(const Ceilings& ceilings) {
  double spread = 0.0;
  for (const std::vector<double>* each :
       {&ceilings.dense_gemm_tflops_each, &ceilings.copy_gbps_each, &ceilings.read_gbps_each}) {
    if (each->empty()) continue;
    const auto [low, high] = std::minmax_element(each->begin(), each->end());
    if (*high > 0) spread = std::max(spread, 1.0 - *low / *high);
  }
  return spread;
}

void Derive(CaseReport& r) {
  kernels::MoELayerWeightsView view;
  view.hidden_size = r.shape.hidden;
  view.ffn_size = r.shape.ffn;
  view.num_experts = r.shape.experts;
  view.activation = kernels::Activation::kSwiGLU;
  r.flops = kernels::MoEForwardFlops(view, r.tokens, r.shape.top_k);
  r.active_experts = 0;
  for (int64_t count : r.result.expert_token_counts) r.active_experts += count > 0 ? 1 : 0;
  r.weight_bytes_read =
      RouterWeightBytes(r.shape) + r.active_experts * ExpertWeightBytes(r.shape, r.dtype);
  const double seconds = r.result.fast.median_ms * 1e-3;
  r.tflops = seconds > 0 ? r.flops / seconds / 1e12 : 0.0;
  r.weight_gbps = seconds > 0 ? static_cast<double>(r.weight_bytes_read) / seconds / 1e9 : 0.0;
  r.dense_gemm_fraction =
      r.ceilings.dense_gemm_tflops > 0 ? r.tflops / r.ceilings.dense_gemm_tflops : 0.0;
  r.copy_bw_fraction = r.ceilings.copy_gbps > 0 ? r.weight_gbps / r.ceilings.copy_gbps : 0.0;
  r.read_bw_fraction = r.ceilings.read_gbps > 0 ? r.weight_gbps / r.ceilings.read_gbps : 0.0;
  if (r.result.naive.has_value() && r.result.fast.median_ms > 0) {
    r.speedup_vs_naive = r.result.naive->median_ms / r.result.fast.median_ms;
  } else {
    r.speedup_vs_naive.reset();
  }
  r.profiling_cost.reset();
  r.expert_ms_sum.reset();
  if (r.result.profiled.has_value() && r.result.fast.median_ms > 0) {
    r.profiling_cost = r.result.profiled->median_ms / r.result.fast.median_ms;
    double sum = 0.0;
    for (double seconds : r.result.expert_seconds) sum += seconds;
    r.expert_ms_sum = 1e3 * sum;
  }
}

std::string TableHeader(const std::string& backend, const std::string& device,
                        const Ceilings& ceilings, const RunOptions& run,
                        std::optional<double> host_load_average) {
  const std::string load =
      host_load_average.has_value() ? absl::StrFormat("%.2f", *host_load_average) : "unknown";
  const double spread = CeilingSpread(ceilings);
  const std::string warning =
      spread > kNoisyCeilingSpread
          ? absl::StrFormat(
                "WARNING: a ceiling moved by %.0f%% between its measurements before and after "
                "the cases: other work shared the machine, every figure below is suspect.\n",
                100.0 * spread)
          : "";
  return absl::StrFormat(
      "%smoe-bench: backend %s on %s; host load average (1 min) at start %s\n"
      "dense GEMM ceiling: %.3f TFLOP/s, measured %s (%s)\n"
      "copy ceiling:       %.1f GB/s, measured %s (%s)\n"
      "read ceiling:       %.1f GB/s, measured %s (%s)\n"
      "times: median and min of %d runs after %d warm-up; seed %d; %s.\n"
      "%%gemm = TFLOP/s / dense GEMM ceiling; %%copy = weight GB/s / copy ceiling; %%read = weight "
      "GB/s / read ceiling; weight GB/s = bytes of the router + experts given >= 1 token, per "
      "median time.\n",
      warning, backend, device, load, ceilings.dense_gemm_tflops,
      JoinMeasurements(ceilings.dense_gemm_tflops_each, 3), ceilings.dense_gemm_method,
      ceilings.copy_gbps, JoinMeasurements(ceilings.copy_gbps_each, 1), ceilings.copy_method,
      ceilings.read_gbps, JoinMeasurements(ceilings.read_gbps_each, 1), ceilings.read_method,
      run.repeats, run.warmup, run.seed, kCopyConvention);
}

std::string TableColumns() {
  return absl::StrFormat("%-14s %5s %5s %10s %10s %8s %8s %6s %6s %6s %4s %10s %7s", "shape", "T",
                         "dtype", "median_ms", "min_ms", "TFLOP/s", "wt_GB/s", "%gemm", "%copy",
                         "%read", "act", "naive_ms", "speedup");
}

std::string TableRow(const CaseReport& r) {
  std::string naive_ms = "-";
  std::string speedup = "-";
  if (r.result.naive.has_value() && r.speedup_vs_naive.has_value()) {
    naive_ms = absl::StrFormat("%.3f", r.result.naive->median_ms);
    speedup = absl::StrFormat("%.2fx", *r.speedup_vs_naive);
  }
  std::string row = absl::StrFormat(
      "%-14s %5d %5s %10.3f %10.3f %8.4f %8.2f %5.1f%% %5.1f%% %5.1f%% %4d %10s %7s", r.shape.name,
      r.tokens, DTypeLabel(r.dtype), r.result.fast.median_ms, r.result.fast.min_ms, r.tflops,
      r.weight_gbps, 100.0 * r.dense_gemm_fraction, 100.0 * r.copy_bw_fraction,
      100.0 * r.read_bw_fraction, r.active_experts, naive_ms, speedup);
  // --expert_timing only, past the fixed columns: the profiling pass and its cost.
  if (r.result.profiled.has_value() && r.profiling_cost.has_value()) {
    absl::StrAppendFormat(&row, "   profiled %.3f ms (%.2fx, experts %.3f ms)",
                          r.result.profiled->median_ms, *r.profiling_cost,
                          r.expert_ms_sum.value_or(0.0));
  }
  return row;
}

nlohmann::json ToJson(const CaseReport& r) {
  nlohmann::json j;
  j["backend"] = r.backend;
  j["device"] = r.device;
  j["shape"] = r.shape.name;
  j["hidden"] = r.shape.hidden;
  j["ffn"] = r.shape.ffn;
  j["experts"] = r.shape.experts;
  j["top_k"] = r.shape.top_k;
  j["tokens"] = r.tokens;
  j["dtype"] = DTypeLabel(r.dtype);
  j["activation"] = kernels::ActivationName(kernels::Activation::kSwiGLU);
  j["warmup"] = r.run.warmup;
  j["repeats"] = r.run.repeats;
  j["seed"] = r.run.seed;
  j["median_ms"] = r.result.fast.median_ms;
  j["min_ms"] = r.result.fast.min_ms;
  j["flops"] = r.flops;
  j["tflops"] = r.tflops;
  j["active_experts"] = r.active_experts;
  j["weight_bytes_read"] = r.weight_bytes_read;
  j["weight_gbps"] = r.weight_gbps;
  j["dense_gemm_tflops"] = r.ceilings.dense_gemm_tflops;
  j["dense_gemm_method"] = r.ceilings.dense_gemm_method;
  j["copy_bw_gbps"] = r.ceilings.copy_gbps;
  j["copy_bw_method"] = r.ceilings.copy_method;
  j["dense_gemm_tflops_each"] = r.ceilings.dense_gemm_tflops_each;
  j["copy_bw_gbps_each"] = r.ceilings.copy_gbps_each;
  j["read_bw_gbps"] = r.ceilings.read_gbps;
  j["read_bw_method"] = r.ceilings.read_method;
  j["read_bw_gbps_each"] = r.ceilings.read_gbps_each;
  j["ceiling_spread"] = CeilingSpread(r.ceilings);
  j["host_was_busy"] = CeilingSpread(r.ceilings) > kNoisyCeilingSpread;
  if (r.host_load_average.has_value()) {
    j["host_load_average_1m"] = *r.host_load_average;
  } else {
    j["host_load_average_1m"] = nullptr;
  }
  j["dense_gemm_fraction"] = r.dense_gemm_fraction;
  j["copy_bw_fraction"] = r.copy_bw_fraction;
  j["read_bw_fraction"] = r.read_bw_fraction;
  j["expert_token_counts"] = r.result.expert_token_counts;
  if (r.result.naive.has_value() && r.speedup_vs_naive.has_value()) {
    j["naive_median_ms"] = r.result.naive->median_ms;
    j["naive_min_ms"] = r.result.naive->min_ms;
    j["speedup_vs_naive"] = *r.speedup_vs_naive;
  } else {
    j["naive_median_ms"] = nullptr;
    j["naive_min_ms"] = nullptr;
    j["speedup_vs_naive"] = nullptr;
  }
  if (r.result.profiled.has_value() && r.profiling_cost.has_value()) {
    j["profiled_median_ms"] = r.result.profiled->median_ms;
    j["profiled_min_ms"] = r.result.profiled->min_ms;
    j["profiling_cost"] = *r.profiling_cost;
    j["expert_ms_sum"] = r.expert_ms_sum.value_or(0.0);
    j["expert_seconds"] = r.result.expert_seconds;
  } else {
    j["profiled_median_ms"] = nullptr;
    j["profiled_min_ms"] = nullptr;
    j["profiling_cost"] = nullptr;
    j["expert_ms_sum"] = nullptr;
    j["expert_seconds"] = nullptr;
  }
  return j;
}

}  // namespace moe::bench
