// What `moe-client bench` measured, and its three renderings: a text report for people, one
// JSON object (the fields bench/serve_bench.sh and bench/metrics_overhead.sh read), and CSV
// (a header line and one row, for spreadsheets and sweeps).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "client/cli/latency_stats.h"

namespace moe::client::cli {

struct BenchReport {
  // The run.
  std::string target;
  std::string model;
  std::string mode;     // "closed" (--concurrency) or "open" (--rate)
  int concurrency = 0;  // closed loop: workers, each with one call in flight; open loop: 0
  double rate = 0;      // open loop: requests/s asked for; closed loop: 0
  std::string arrival;  // open loop: "poisson" or "constant"; closed loop: ""
  int connections = 0;  // channels (connections) the calls were spread over
  int64_t rows_per_request = 1;
  int64_t width = 0;
  std::string wire;  // "fp32", "fp16", "bf16"
  bool raw = true;
  uint64_t seed = 0;
  double warmup_s = 0;

  // What was measured: calls started after the warm-up.
  double seconds = 0;  // from the first measured call's start to the last one's end
  int64_t requests_ok = 0;
  int64_t requests_failed = 0;
  std::map<std::string, int64_t> errors;              // gRPC code name -> calls that ended with it
  std::map<std::string, std::string> error_messages;  // gRPC code name -> its first message
  LatencySummary latency_ms;                          // of the successful calls
  // Means of the response parameters queue_us, compute_us and batch_rows over the successful
  // calls that carried them (`with_server_timing` of them; 0 when the server sets none).
  int64_t with_server_timing = 0;
  double mean_queue_us = 0;
  double mean_compute_us = 0;
  double mean_batch_rows = 0;

  // Open loop: whether the client kept to the schedule. `sent_late` calls went out more than
  // 1 ms after their time (the worst by `max_send_lag_ms`); `dropped` were never sent because
  // `max_in_flight` calls were already waiting for answers.
  int64_t sent_late = 0;
  double max_send_lag_ms = 0;
  int64_t dropped = 0;
  int64_t max_in_flight = 0;  // the most calls in flight at once (both modes)

  double requests_per_s() const { return seconds > 0 ? requests_ok / seconds : 0; }
  double rows_per_s() const { return requests_per_s() * static_cast<double>(rows_per_request); }
};

// Several lines, for a terminal.
std::string FormatText(const BenchReport& report);
// One line: a JSON object.
std::string FormatJson(const BenchReport& report);
// The CSV column names, one line (no newline at the end), and the report as one CSV line.
std::string CsvHeader();
std::string FormatCsvRow(const BenchReport& report);

}  // namespace moe::client::cli
