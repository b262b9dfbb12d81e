#include "bench/generation_report.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace moe::bench {
namespace {

// The generation target: continuous batching at least this many times static batching's
// output tokens/s at 32 streams with mixed output lengths.
constexpr double kTargetRatio = 3.0;
constexpr int kTargetStreams = 32;

std::string Errors(const GenerationLoadReport& report) {
  if (report.errors.empty()) return "0";
  std::vector<std::string> parts;
  for (const auto& [code, count] : report.errors) parts.push_back(absl::StrCat(code, ":", count));
  return absl::StrJoin(parts, ",");
}

double PaddingPercent(const GenerationLoadReport& report) {
  return report.step_tokens > 0 ? 100.0 * static_cast<double>(report.padding_tokens) /
                                      static_cast<double>(report.step_tokens)
                                : 0.0;
}

std::string RangeText(const client::cli::IntRange& range) {
  return range.fixed() ? absl::StrCat(range.min) : absl::StrCat(range.min, ":", range.max);
}

nlohmann::json LatencyJson(const client::cli::LatencySummary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

}  // namespace

std::string FormatGenerationTable(const GenerationBenchSetup& setup,
                                  const std::vector<GenerationRun>& runs) {
  std::string out = absl::StrFormat(
      "model %s, backend %s (%s)\nprompts %s tokens, outputs %s tokens %s, greedy, exact; "
      "%s measured after %s warm-up per run\n\n",
      setup.model, setup.backend, setup.device, RangeText(setup.load.prompt_len),
      RangeText(setup.load.output_len), client::cli::SpreadName(setup.load.output_len.spread),
      absl::FormatDuration(setup.load.duration), absl::FormatDuration(setup.load.warmup));

  constexpr size_t kColumns = 12;
  using Row = std::array<std::string, kColumns>;
  std::vector<Row> rows = {{"batching", "streams", "out tok/s", "req/s", "TTFT p50 ms",
                            "TTFT p99 ms", "TPOT p50 ms", "e2e p50 ms", "steps", "padding %",
                            "preempted", "errors"}};
  for (const GenerationRun& run : runs) {
    const GenerationLoadReport& r = run.report;
    rows.push_back(
        {run.batching, absl::StrCat(r.streams), absl::StrFormat("%.1f", r.output_tokens_per_second),
         absl::StrFormat("%.2f", r.requests_per_second), absl::StrFormat("%.1f", r.ttft_ms.p50),
         absl::StrFormat("%.1f", r.ttft_ms.p99), absl::StrFormat("%.2f", r.tpot_ms.p50),
         absl::StrFormat("%.0f", r.e2e_ms.p50), absl::StrCat(r.steps),
         absl::StrFormat("%.1f", PaddingPercent(r)), absl::StrCat(r.preemptions), Errors(r)});
  }
  std::array<size_t, kColumns> widths{};
  for (const Row& row : rows) {
    for (size_t i = 0; i < kColumns; ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    absl::StrAppend(&out, "|");
    for (size_t i = 0; i < kColumns; ++i) {
      absl::StrAppend(&out, " ", rows[r][i], std::string(widths[i] - rows[r][i].size(), ' '), " |");
    }
    absl::StrAppend(&out, "\n");
    if (r == 0) {
      absl::StrAppend(&out, "|");
      for (size_t width : widths) absl::StrAppend(&out, std::string(width + 2, '-'), "|");
      absl::StrAppend(&out, "\n");
    }
  }

  int top = 0;
  for (const GenerationRun& run : runs) top = std::max(top, run.report.streams);
  const GenerationRun* continuous = nullptr;
  for (const GenerationRun& run : runs) {
    if (run.batching == "continuous" && run.report.streams == top) continuous = &run;
  }
  if (continuous == nullptr) return out;
  absl::StrAppend(&out, "\n");
  for (const GenerationRun& run : runs) {
    if (run.batching == "continuous" || run.report.streams != top) continue;
    const double base = run.report.output_tokens_per_second;
    if (base <= 0) continue;
    const double ratio = continuous->report.output_tokens_per_second / base;
    std::string target;
    if (run.batching == "static" && top == kTargetStreams) {
      target = absl::StrFormat(" (target >= %.0f: %s)", kTargetRatio,
                               ratio >= kTargetRatio ? "met" : "NOT met");
    }
    absl::StrAppendFormat(&out,
                          "output tokens/s at %d streams, continuous / %s = %.1f / %.1f = %.2f%s; "
                          "TTFT p50 %.1f vs %.1f ms\n",
                          top, run.batching, continuous->report.output_tokens_per_second, base,
                          ratio, target, continuous->report.ttft_ms.p50, run.report.ttft_ms.p50);
  }
  return out;
}

std::string GenerationRunsJson(const GenerationBenchSetup& setup,
                               const std::vector<GenerationRun>& runs) {
  nlohmann::json json_runs = nlohmann::json::array();
  for (const GenerationRun& run : runs) {
    const GenerationLoadReport& r = run.report;
    json_runs.push_back({{"batching", run.batching},
                         {"streams", r.streams},
                         {"kv_cache_blocks", run.kv_cache_blocks},
                         {"seconds", r.seconds},
                         {"requests_completed", r.requests_completed},
                         {"requests_failed", r.requests_failed},
                         {"errors", r.errors},
                         {"prompt_tokens", r.prompt_tokens},
                         {"output_tokens", r.output_tokens},
                         {"output_tokens_per_second", r.output_tokens_per_second},
                         {"requests_per_second", r.requests_per_second},
                         {"ttft_ms", LatencyJson(r.ttft_ms)},
                         {"itl_ms", LatencyJson(r.itl_ms)},
                         {"tpot_ms", LatencyJson(r.tpot_ms)},
                         {"e2e_ms", LatencyJson(r.e2e_ms)},
                         {"steps", r.steps},
                         {"step_tokens", r.step_tokens},
                         {"padding_tokens", r.padding_tokens},
                         {"preemptions", r.preemptions}});
  }
  const nlohmann::json setup_json = {
      {"model", setup.model},
      {"backend", setup.backend},
      {"device", setup.device},
      {"prompt_len", RangeText(setup.load.prompt_len)},
      {"output_len", RangeText(setup.load.output_len)},
      {"output_len_spread", std::string(client::cli::SpreadName(setup.load.output_len.spread))},
      {"duration_s", absl::ToDoubleSeconds(setup.load.duration)},
      {"warmup_s", absl::ToDoubleSeconds(setup.load.warmup)},
      {"seed", setup.load.seed}};
  return nlohmann::json{{"setup", setup_json}, {"runs", json_runs}}.dump(2);
}

}  // namespace moe::bench
