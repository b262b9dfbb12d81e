#include "client/cli/generate_bench_report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

std::string RangeText(const IntRange& range) {
  if (range.fixed()) return absl::StrCat(range.min);
  return absl::StrCat(range.min, ":", range.max,
                      range.spread == Spread::kLogUniform ? " log-uniform" : "");
}

std::string LatencyLine(absl::string_view name, const LatencySummary& l) {
  return absl::StrFormat("  %-10s  p50 %.2f  p90 %.2f  p99 %.2f  mean %.2f  max %.2f  (%d)\n", name,
                         l.p50, l.p90, l.p99, l.mean, l.max, l.count);
}

void AddLatency(nlohmann::json& out, const std::string& name, const LatencySummary& l) {
  out[name + "_count"] = l.count;
  out[name + "_mean_ms"] = l.mean;
  out[name + "_min_ms"] = l.min;
  out[name + "_p50_ms"] = l.p50;
  out[name + "_p90_ms"] = l.p90;
  out[name + "_p95_ms"] = l.p95;
  out[name + "_p99_ms"] = l.p99;
  out[name + "_max_ms"] = l.max;
}

}  // namespace

std::string FormatGenerateText(const GenerateBenchReport& r) {
  std::string out;
  absl::StrAppendFormat(&out,
                        "moe-client bench --generate: closed loop, %d stream%s over %d "
                        "connection%s; model %s at %s\n",
                        r.concurrency, r.concurrency == 1 ? "" : "s", r.connections,
                        r.connections == 1 ? "" : "s", r.model, r.target);
  absl::StrAppendFormat(&out,
                        "  workload    prompts of %s random ids (vocabulary %d), max new tokens "
                        "%s%s, temperature %g, seed %d; warm-up %.2f s not counted\n",
                        RangeText(r.prompt_len), r.vocab_size, RangeText(r.max_new_tokens),
                        r.ignore_eos ? " (ignore_eos)" : "", r.temperature, r.seed, r.warmup_s);
  absl::StrAppendFormat(&out, "  requests    %d completed, %d failed in %.2f s: %.2f requests/s\n",
                        r.requests_completed, r.requests_failed, r.seconds,
                        r.requests_per_second());
  absl::StrAppendFormat(&out,
                        "  tokens      %d output (%.1f tokens/s), %d prompt; %d preemption%s\n",
                        r.output_tokens, r.output_tokens_per_second(), r.prompt_tokens,
                        r.preemptions, r.preemptions == 1 ? "" : "s");
  absl::StrAppend(&out, "  ms (client, nearest-rank percentiles; count):\n");
  absl::StrAppend(&out, LatencyLine("ttft", r.ttft_ms), LatencyLine("itl", r.itl_ms),
                  LatencyLine("tpot", r.tpot_ms), LatencyLine("e2e", r.e2e_ms));
  absl::StrAppendFormat(&out, "  server      mean time to first token %.2f ms\n",
                        r.mean_server_ttft_ms);
  for (const auto& [reason, count] : r.finish_reasons) {
    absl::StrAppendFormat(&out, "  finish      %s %d\n", reason, count);
  }
  for (const auto& [code, count] : r.errors) {
    absl::StrAppendFormat(&out, "  errors      %s %d", code, count);
    if (const auto it = r.error_messages.find(code); it != r.error_messages.end()) {
      absl::StrAppend(&out, " (first: ", it->second, ")");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string FormatGenerateJson(const GenerateBenchReport& r) {
  nlohmann::json out = {
      {"mode", "generate"},
      {"target", r.target},
      {"model", r.model},
      {"concurrency", r.concurrency},
      {"connections", r.connections},
      {"seed", r.seed},
      {"vocab_size", r.vocab_size},
      {"prompt_len_min", r.prompt_len.min},
      {"prompt_len_max", r.prompt_len.max},
      {"max_new_tokens_min", r.max_new_tokens.min},
      {"max_new_tokens_max", r.max_new_tokens.max},
      {"max_new_tokens_spread", std::string(SpreadName(r.max_new_tokens.spread))},
      {"ignore_eos", r.ignore_eos},
      {"temperature", r.temperature},
      {"warmup_s", r.warmup_s},
      {"seconds", r.seconds},
      {"requests_completed", r.requests_completed},
      {"requests_failed", r.requests_failed},
      {"requests_per_second", r.requests_per_second()},
      {"errors", r.errors},
      {"error_messages", r.error_messages},
      {"finish_reasons", r.finish_reasons},
      {"prompt_tokens", r.prompt_tokens},
      {"output_tokens", r.output_tokens},
      {"output_tokens_per_second", r.output_tokens_per_second()},
      {"preemptions", r.preemptions},
      {"mean_server_ttft_ms", r.mean_server_ttft_ms},
      {"percentiles", "nearest-rank"},
  };
  AddLatency(out, "ttft", r.ttft_ms);
  AddLatency(out, "itl", r.itl_ms);
  AddLatency(out, "tpot", r.tpot_ms);
  AddLatency(out, "e2e", r.e2e_ms);
  return out.dump();
}

}  // namespace moe::client::cli
