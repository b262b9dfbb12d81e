#include "client/cli/bench_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/cli/input_rows.h"
#include "client/cli/load_clock.h"

namespace moe::client::cli {
namespace {

constexpr int kInputsPerWorker = 8;  // distinct random requests each worker cycles through
constexpr auto kLate = std::chrono::milliseconds(1);

// `kInputsPerWorker` requests of random rows, each one InferInput.
std::vector<std::vector<InferInput>> MakeInputs(const BenchOptions& options, uint64_t seed) {
  std::vector<std::vector<InferInput>> inputs;
  for (int i = 0; i < kInputsPerWorker; ++i) {
    InputRows rows = RandomRows(options.rows_per_request, options.width, seed * 7919 + i);
    inputs.push_back({InferInput{.name = options.input_name,
                                 .shape = {rows.rows, rows.width},
                                 .values = std::move(rows.values),
                                 .wire_type = options.wire,
                                 .raw = options.raw}});
  }
  return inputs;
}

InferOptions CallOptions(const BenchOptions& options) {
  InferOptions call;
  call.priority = options.priority;
  return call;
}

// What some of the counted calls measured (not thread-safe: one per worker, or under a mutex).
struct Tally {
  std::vector<double> latency_ms;  // successful calls
  double queue_us = 0, compute_us = 0, batch_rows = 0;
  int64_t with_server_timing = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> error_messages;  // the first of each code
  Clock::time_point first_start = Clock::time_point::max();
  Clock::time_point last_finish = Clock::time_point::min();

  void Record(Clock::time_point start, Clock::time_point finish,
              const absl::StatusOr<InferResult>& result) {
    first_start = std::min(first_start, start);
    last_finish = std::max(last_finish, finish);
    if (!result.ok()) {
      ++failed;
      const std::string code = absl::StatusCodeToString(result.status().code());
      ++errors[code];
      error_messages.emplace(code, result.status().message());
      return;
    }
    latency_ms.push_back(Ms(finish - start));
    if (result->queue_us && result->compute_us && result->batch_rows) {
      queue_us += static_cast<double>(*result->queue_us);
      compute_us += static_cast<double>(*result->compute_us);
      batch_rows += static_cast<double>(*result->batch_rows);
      ++with_server_timing;
    }
  }

  void Merge(Tally&& other) {
    latency_ms.insert(latency_ms.end(), other.latency_ms.begin(), other.latency_ms.end());
    queue_us += other.queue_us;
    compute_us += other.compute_us;
    batch_rows += other.batch_rows;
    with_server_timing += other.with_server_timing;
    failed += other.failed;
    for (const auto& [code, count] : other.errors) errors[code] += count;
    error_messages.merge(other.error_messages);
    first_start = std::min(first_start, other.first_start);
    last_finish = std::max(last_finish, other.last_finish);
  }
};

// Counts for the progress line, updated as calls end.
struct LiveCounts {
  std::atomic<int64_t> ok{0}, failed{0}, in_flight{0};
};

// Calls `options.progress` about once a second until destroyed.
class ProgressReporter {
 public:
  ProgressReporter(const BenchOptions& options, const LiveCounts& counts, const StartLine& line)
      : options_(options), counts_(counts), line_(line) {
    if (options_.progress) thread_ = std::thread([this] { Run(); });
  }
  ~ProgressReporter() {
    done_.Notify();
    if (thread_.joinable()) thread_.join();
  }
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

 private:
  void Run() {
    int64_t last_done = 0;
    Clock::time_point last = Clock::now();
    while (!done_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      const Clock::time_point now = Clock::now();
      const int64_t ok = counts_.ok.load(std::memory_order_relaxed);
      const int64_t failed = counts_.failed.load(std::memory_order_relaxed);
      const double rate = (ok + failed - last_done) / std::max(1e-9, Ms(now - last) / 1e3);
      last_done = ok + failed;
      last = now;
      const bool warming = now < line_.measure_start;
      std::string text = absl::StrFormat(
          "%s %.0f s: %d ok, %d failed, %.1f calls/s", warming ? "warm-up" : "measuring",
          Ms(now - (warming ? line_.start : line_.measure_start)) / 1e3, ok, failed, rate);
      if (options_.rate > 0) {
        absl::StrAppend(&text, ", ", counts_.in_flight.load(std::memory_order_relaxed),
                        " in flight");
      }
      options_.progress(text);
    }
  }

  const BenchOptions& options_;
  const LiveCounts& counts_;
  const StartLine& line_;
  absl::Notification done_;
  std::thread thread_;
};

void ClosedLoopWorker(const BenchOptions& options, Client* client, int index, StartLine* start_line,
                      std::atomic<int64_t>* requests_left, LiveCounts* counts, Tally* tally) {
  const std::vector<std::vector<InferInput>> inputs = MakeInputs(options, options.seed + index);
  const InferOptions call_options = CallOptions(options);
  (void)client->ServerLive();  // connects; a server that is down shows in the counted calls
  start_line->prepared.DecrementCount();
  start_line->go.WaitForNotification();
  for (int64_t call = 0;; ++call) {
    const Clock::time_point start = Clock::now();
    const bool counted = start >= start_line->measure_start;
    if (counted) {
      if (options.requests > 0) {
        if (requests_left->fetch_sub(1) <= 0) break;
      } else if (start >= start_line->stop) {
        break;
      }
    }
    absl::StatusOr<InferResult> result =
        client->Infer(options.model, inputs[call % kInputsPerWorker], call_options);
    const Clock::time_point finish = Clock::now();
    if (!counted) continue;
    (result.ok() ? counts->ok : counts->failed).fetch_add(1, std::memory_order_relaxed);
    tally->Record(start, finish, result);
  }
}

// The open loop's calls in flight and what the ended ones measured.
struct OpenLoopState {
  absl::Mutex mu;
  Tally tally ABSL_GUARDED_BY(mu);
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
  LiveCounts counts;
};

BenchReport ReportOf(const BenchOptions& options, int connections, Tally tally) {
  BenchReport report;
  report.target = options.target;
  report.model = options.model;
  report.mode = options.rate > 0 ? "open" : "closed";
  report.concurrency = options.rate > 0 ? 0 : options.concurrency;
  report.rate = options.rate;
  report.arrival = options.rate > 0 ? std::string(ArrivalName(options.arrival)) : "";
  report.connections = connections;
  report.rows_per_request = options.rows_per_request;
  report.width = options.width;
  report.wire = std::string(WireTypeName(options.wire));
  report.raw = options.raw;
  report.seed = options.seed;
  report.warmup_s = absl::ToDoubleSeconds(options.warmup);
  report.requests_ok = static_cast<int64_t>(tally.latency_ms.size());
  report.requests_failed = tally.failed;
  report.errors = tally.errors;
  report.error_messages = tally.error_messages;
  report.seconds =
      tally.first_start < tally.last_finish ? Ms(tally.last_finish - tally.first_start) / 1e3 : 0;
  report.latency_ms = Summarize(std::move(tally.latency_ms));
  report.with_server_timing = tally.with_server_timing;
  if (tally.with_server_timing > 0) {
    const double n = static_cast<double>(tally.with_server_timing);
    report.mean_queue_us = tally.queue_us / n;
    report.mean_compute_us = tally.compute_us / n;
    report.mean_batch_rows = tally.batch_rows / n;
  }
  return report;
}

BenchReport RunClosedLoop(const std::vector<Client*>& clients, const BenchOptions& options) {
  std::atomic<int64_t> requests_left(options.requests);
  std::vector<Tally> tallies(options.concurrency);
  LiveCounts counts;
  StartLine start_line(options.concurrency);
  std::vector<std::thread> workers;
  for (int i = 0; i < options.concurrency; ++i) {
    workers.emplace_back(ClosedLoopWorker, std::cref(options), clients[i % clients.size()], i,
                         &start_line, &requests_left, &counts, &tallies[i]);
  }
  start_line.prepared.Wait();
  start_line.start = Clock::now();
  start_line.measure_start = start_line.start + ToClock(options.warmup);
  start_line.stop = start_line.measure_start + ToClock(options.duration);
  start_line.go.Notify();
  {
    ProgressReporter progress(options, counts, start_line);
    for (std::thread& worker : workers) worker.join();
  }
  Tally tally;
  for (Tally& t : tallies) tally.Merge(std::move(t));
  BenchReport report = ReportOf(options, static_cast<int>(std::min(clients.size(), workers.size())),
                                std::move(tally));
  report.max_in_flight = options.concurrency;
  return report;
}

BenchReport RunOpenLoop(const std::vector<Client*>& clients, const BenchOptions& options) {
  const std::vector<std::vector<InferInput>> inputs = MakeInputs(options, options.seed);
  const InferOptions call_options = CallOptions(options);
  for (Client* client : clients) (void)client->ServerLive();  // connects
  OpenLoopState state;
  StartLine start_line(0);
  start_line.start = Clock::now();
  start_line.measure_start = start_line.start + ToClock(options.warmup);
  start_line.stop = start_line.measure_start + ToClock(options.duration);
  ArrivalSchedule schedule(options.arrival, options.rate, options.seed);
  int64_t counted_slots = 0, sent_late = 0, dropped = 0, max_in_flight = 0;
  Clock::duration max_lag = Clock::duration::zero();
  {
    ProgressReporter progress(options, state.counts, start_line);
    for (int64_t i = 0;; ++i) {
      const Clock::time_point due = start_line.start + ToClock(schedule.Next());
      const bool counted = due >= start_line.measure_start;
      if (counted) {
        if (options.requests > 0 ? counted_slots >= options.requests : due >= start_line.stop) {
          break;
        }
        ++counted_slots;
      }
      std::this_thread::sleep_until(due);
      const Clock::time_point start = Clock::now();
      {
        absl::MutexLock lock(&state.mu);
        if (state.in_flight >= options.max_in_flight) {
          if (counted) ++dropped;
          continue;
        }
        ++state.in_flight;
        max_in_flight = std::max(max_in_flight, state.in_flight);
      }
      state.counts.in_flight.fetch_add(1, std::memory_order_relaxed);
      if (counted) {
        if (start - due > kLate) ++sent_late;
        max_lag = std::max(max_lag, start - due);
      }
      clients[i % clients.size()]->InferAsync(
          options.model, inputs[i % kInputsPerWorker], call_options,
          [&state, start, counted](absl::StatusOr<InferResult> result) {
            const Clock::time_point finish = Clock::now();
            state.counts.in_flight.fetch_sub(1, std::memory_order_relaxed);
            if (counted) {
              (result.ok() ? state.counts.ok : state.counts.failed)
                  .fetch_add(1, std::memory_order_relaxed);
            }
            absl::MutexLock lock(&state.mu);
            if (counted) state.tally.Record(start, finish, result);
            --state.in_flight;
          });
    }
    absl::MutexLock lock(&state.mu);
    state.mu.Await(absl::Condition(
        +[](int64_t* in_flight) { return *in_flight == 0; }, &state.in_flight));
  }
  absl::MutexLock lock(&state.mu);
  BenchReport report = ReportOf(options, static_cast<int>(clients.size()), state.tally);
  report.sent_late = sent_late;
  report.max_send_lag_ms = Ms(max_lag);
  report.dropped = dropped;
  report.max_in_flight = max_in_flight;
  return report;
}

}  // namespace

absl::StatusOr<WireType> ParseWireType(absl::string_view name) {
  if (name == "fp32") return WireType::kFp32;
  if (name == "fp16") return WireType::kFp16;
  if (name == "bf16") return WireType::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("--wire '", std::string(name), "': expected fp32, fp16 or bf16"));
}

absl::string_view WireTypeName(WireType wire) {
  switch (wire) {
    case WireType::kFp32:
      return "fp32";
    case WireType::kFp16:
      return "fp16";
    case WireType::kBf16:
      return "bf16";
  }
  return "?";
}

absl::Status ValidateBenchOptions(const BenchOptions& options) {
  if (options.rows_per_request < 1) {
    return absl::InvalidArgumentError("--rows-per-request must be at least 1");
  }
  if (options.requests < 0) return absl::InvalidArgumentError("--requests must not be negative");
  if (options.requests == 0 && options.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be positive (or set --requests)");
  }
  if (options.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--warmup must not be negative");
  }
  if (options.rate < 0) return absl::InvalidArgumentError("--rate must not be negative");
  if (options.rate > 0 && options.max_in_flight < 1) {
    return absl::InvalidArgumentError("--max-in-flight must be at least 1");
  }
  if (options.rate == 0 && (options.concurrency < 1 || options.concurrency > 4096)) {
    return absl::InvalidArgumentError("--concurrency must be between 1 and 4096");
  }
  return absl::OkStatus();
}

absl::StatusOr<BenchReport> RunBench(const std::vector<Client*>& clients,
                                     const BenchOptions& options) {
  if (clients.empty()) return absl::InvalidArgumentError("no connection to send calls over");
  if (options.width < 1) return absl::InvalidArgumentError("the input width must be positive");
  if (absl::Status valid = ValidateBenchOptions(options); !valid.ok()) return valid;
  return options.rate > 0 ? RunOpenLoop(clients, options) : RunClosedLoop(clients, options);
}

}  // namespace moe::client::cli
