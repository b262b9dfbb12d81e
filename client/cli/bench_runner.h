// The load `moe-client bench` sends, and what it measures.
//
// Closed loop (`concurrency` workers): each worker keeps one call in flight, sending the next
// when the previous one is answered, so the offered load follows the server's speed (as
// perf_analyzer's concurrency mode and ghz do). Open loop (`rate` > 0): calls are sent on a
// schedule fixed in advance (constant or Poisson arrivals) with InferAsync, so that a slow
// answer does not delay the next send; when the client itself falls behind, the calls it sent
// late are counted, and calls are dropped (counted, never sent) while `max_in_flight` are
// already waiting.
//
// Both: every worker (or connection) first makes one call to connect, then all start together;
// calls started during the warm-up are neither counted nor timed; the measured window runs from
// the first counted call's start to the last one's end. No call is retried.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli/arrival_schedule.h"
#include "client/cli/bench_report.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct BenchOptions {
  std::string target;  // for the report
  std::string model;
  std::string input_name = "input";
  int64_t width = 0;  // values per row
  int concurrency = 1;
  double rate = 0;  // > 0: open loop
  Arrival arrival = Arrival::kPoisson;
  absl::Duration duration = absl::Seconds(10);  // when requests == 0
  int64_t requests = 0;                         // > 0: this many counted calls
  absl::Duration warmup = absl::Seconds(1);
  int64_t rows_per_request = 1;
  WireType wire = WireType::kFp32;
  bool raw = true;
  std::optional<int64_t> priority;
  uint64_t seed = 1;
  int64_t max_in_flight = 10000;  // open loop
  // Called about once a second while the load runs, with a one-line summary so far (for a live
  // progress line); may be empty.
  std::function<void(const std::string&)> progress;
};

// INVALID_ARGUMENT naming the flag when `options` (all but width) are out of range.
absl::Status ValidateBenchOptions(const BenchOptions& options);

// Runs the load over `clients` (the connections: worker or call i uses clients[i % size]) and
// returns what it measured. INVALID_ARGUMENT for bad options. A run in which calls fail is still
// a report (errors by code); the caller decides what a run with no successful call means.
absl::StatusOr<BenchReport> RunBench(const std::vector<Client*>& clients,
                                     const BenchOptions& options);

// "fp32", "fp16", "bf16"; INVALID_ARGUMENT otherwise.
absl::StatusOr<WireType> ParseWireType(absl::string_view name);
absl::string_view WireTypeName(WireType wire);

}  // namespace moe::client::cli
