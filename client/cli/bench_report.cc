#include "client/cli/bench_report.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

std::string ErrorsField(const std::map<std::string, int64_t>& errors) {
  return absl::StrJoin(errors, ";", absl::PairFormatter(":"));
}

// A CSV field: quoted (with doubled quotes) when it holds a comma, quote or line break.
std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

std::string Number(double value) { return absl::StrFormat("%.6g", value); }

}  // namespace

std::string FormatText(const BenchReport& r) {
  std::string out;
  if (r.mode == "open") {
    absl::StrAppendFormat(&out,
                          "moe-client bench: open loop, %s arrivals at %s requests/s over %d "
                          "connection%s; model %s at %s\n",
                          r.arrival, Number(r.rate), r.connections, r.connections == 1 ? "" : "s",
                          r.model, r.target);
  } else {
    absl::StrAppendFormat(&out,
                          "moe-client bench: closed loop, %d worker%s over %d connection%s; "
                          "model %s at %s\n",
                          r.concurrency, r.concurrency == 1 ? "" : "s", r.connections,
                          r.connections == 1 ? "" : "s", r.model, r.target);
  }
  absl::StrAppendFormat(
      &out, "  requests    %d ok, %d failed in %.2f s: %.1f requests/s, %.1f rows/s\n",
      r.requests_ok, r.requests_failed, r.seconds, r.requests_per_s(), r.rows_per_s());
  absl::StrAppendFormat(&out,
                        "  inputs      %d row%s of %d per request, %s %s, seed %d; warm-up %.2f s "
                        "not counted\n",
                        r.rows_per_request, r.rows_per_request == 1 ? "" : "s", r.width, r.wire,
                        r.raw ? "raw" : "typed", r.seed, r.warmup_s);
  const LatencySummary& l = r.latency_ms;
  absl::StrAppendFormat(&out,
                        "  latency ms  min %.3f  p50 %.3f  p90 %.3f  p95 %.3f  p99 %.3f  max %.3f\n"
                        "              mean %.3f  stddev %.3f; nearest-rank percentiles of %d "
                        "calls\n",
                        l.min, l.p50, l.p90, l.p95, l.p99, l.max, l.mean, l.stddev, l.count);
  if (r.with_server_timing > 0) {
    absl::StrAppendFormat(&out,
                          "  server      mean queue %.0f us  compute %.0f us  batch rows %.2f "
                          "(response parameters of %d calls)\n",
                          r.mean_queue_us, r.mean_compute_us, r.mean_batch_rows,
                          r.with_server_timing);
  } else {
    absl::StrAppend(&out, "  server      no queue_us / compute_us / batch_rows in the answers\n");
  }
  if (r.mode == "open") {
    absl::StrAppendFormat(&out,
                          "  schedule    %d sent late (> 1 ms; worst %.2f ms), %d dropped, at most "
                          "%d in flight\n",
                          r.sent_late, r.max_send_lag_ms, r.dropped, r.max_in_flight);
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

std::string FormatJson(const BenchReport& r) {
  const LatencySummary& l = r.latency_ms;
  nlohmann::json out = {
      {"target", r.target},
      {"model", r.model},
      {"mode", r.mode},
      {"concurrency", r.concurrency},
      {"rate", r.rate},
      {"arrival", r.arrival},
      {"connections", r.connections},
      {"rows_per_request", r.rows_per_request},
      {"width", r.width},
      {"wire", r.wire},
      {"raw", r.raw},
      {"seed", r.seed},
      {"warmup_s", r.warmup_s},
      {"seconds", r.seconds},
      {"requests_ok", r.requests_ok},
      {"requests_failed", r.requests_failed},
      {"errors", r.errors},
      {"error_messages", r.error_messages},
      {"requests_per_s", r.requests_per_s()},
      {"rows_per_s", r.rows_per_s()},
      {"percentiles", "nearest-rank"},
      {"latency_ms",
       {{"count", l.count},
        {"min", l.min},
        {"mean", l.mean},
        {"stddev", l.stddev},
        {"p50", l.p50},
        {"p90", l.p90},
        {"p95", l.p95},
        {"p99", l.p99},
        {"max", l.max}}},
      {"with_server_timing", r.with_server_timing},
      {"mean_queue_us", r.mean_queue_us},
      {"mean_compute_us", r.mean_compute_us},
      {"mean_batch_rows", r.mean_batch_rows},
      {"sent_late", r.sent_late},
      {"max_send_lag_ms", r.max_send_lag_ms},
      {"dropped", r.dropped},
      {"max_in_flight", r.max_in_flight},
  };
  return out.dump();
}

std::string CsvHeader() {
  return "mode,target,model,concurrency,rate,arrival,connections,rows_per_request,width,wire,raw,"
         "seed,seconds,requests_ok,requests_failed,requests_per_s,rows_per_s,latency_min_ms,"
         "latency_mean_ms,latency_stddev_ms,latency_p50_ms,latency_p90_ms,latency_p95_ms,"
         "latency_p99_ms,latency_max_ms,mean_queue_us,mean_compute_us,mean_batch_rows,sent_late,"
         "max_send_lag_ms,dropped,max_in_flight,errors";
}

std::string FormatCsvRow(const BenchReport& r) {
  const LatencySummary& l = r.latency_ms;
  const std::vector<std::string> fields = {
      CsvField(r.mode),
      CsvField(r.target),
      CsvField(r.model),
      absl::StrCat(r.concurrency),
      Number(r.rate),
      CsvField(r.arrival),
      absl::StrCat(r.connections),
      absl::StrCat(r.rows_per_request),
      absl::StrCat(r.width),
      CsvField(r.wire),
      r.raw ? "raw" : "typed",
      absl::StrCat(r.seed),
      Number(r.seconds),
      absl::StrCat(r.requests_ok),
      absl::StrCat(r.requests_failed),
      Number(r.requests_per_s()),
      Number(r.rows_per_s()),
      Number(l.min),
      Number(l.mean),
      Number(l.stddev),
      Number(l.p50),
      Number(l.p90),
      Number(l.p95),
      Number(l.p99),
      Number(l.max),
      Number(r.mean_queue_us),
      Number(r.mean_compute_us),
      Number(r.mean_batch_rows),
      absl::StrCat(r.sent_late),
      Number(r.max_send_lag_ms),
      absl::StrCat(r.dropped),
      absl::StrCat(r.max_in_flight),
      CsvField(ErrorsField(r.errors)),
  };
  return absl::StrJoin(fields, ",");
}

}  // namespace moe::client::cli
