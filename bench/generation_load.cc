#include "bench/generation_load.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/cli/load_clock.h"
#include "client/cli/stream_timing.h"

namespace moe::bench {
namespace {

using client::cli::Clock;
using client::cli::Ms;
using client::cli::StartLine;
using client::cli::TokenArrival;

// What the scheduler reported for one request. Shared by the sink and the stream thread, so
// that whichever lets go last frees it: the scheduler thread may still be inside Notify() when
// the stream thread wakes and moves on.
struct Outcome {
  std::vector<TokenArrival> arrivals;
  absl::Status status;
  Clock::time_point end;
  absl::Notification done;
};

// Times each batch of tokens as the scheduler hands it over. Deletes itself in OnFinished, the
// sink's last call.
class RecordingSink final : public scheduler::GenerationSink {
 public:
  RecordingSink(Clock::time_point start, std::shared_ptr<Outcome> outcome)
      : start_(start), outcome_(std::move(outcome)) {}

  void OnTokens(std::span<const int32_t> token_ids, std::span<const float> logprobs) override {
    outcome_->arrivals.push_back(
        TokenArrival{.ms = Ms(Clock::now() - start_), .tokens = std::ssize(token_ids)});
  }

  void OnFinished(const absl::Status& status, const scheduler::GenerationSummary&) override {
    std::shared_ptr<Outcome> outcome = std::move(outcome_);
    outcome->status = status;
    outcome->end = Clock::now();
    delete this;
    outcome->done.Notify();
  }

 private:
  const Clock::time_point start_;
  std::shared_ptr<Outcome> outcome_;
};

// What one stream's counted requests measured.
struct Tally {
  client::cli::StreamSamples samples;
  int64_t completed = 0, failed = 0, prompt_tokens = 0, output_tokens = 0;
  std::map<std::string, int64_t> errors;
  Clock::time_point first_start = Clock::time_point::max();
  Clock::time_point last_end = Clock::time_point::min();

  void Record(Clock::time_point start, int64_t prompt_len, const Outcome& outcome) {
    first_start = std::min(first_start, start);
    last_end = std::max(last_end, outcome.end);
    if (!outcome.status.ok()) {
      ++failed;
      ++errors[absl::StatusCodeToString(outcome.status.code())];
      return;
    }
    const client::cli::StreamTiming timing =
        client::cli::AccountStream(outcome.arrivals, Ms(outcome.end - start));
    ++completed;
    prompt_tokens += prompt_len;
    output_tokens += timing.tokens;
    samples.Add(timing);
  }

  void Merge(const Tally& other) {
    samples.Merge(other.samples);
    completed += other.completed;
    failed += other.failed;
    prompt_tokens += other.prompt_tokens;
    output_tokens += other.output_tokens;
    for (const auto& [code, count] : other.errors) errors[code] += count;
    first_start = std::min(first_start, other.first_start);
    last_end = std::max(last_end, other.last_end);
  }
};

void Stream(scheduler::GenerationScheduler& scheduler, const GenerationLoadOptions& options,
            int index, StartLine* start_line, Tally* tally) {
  std::mt19937_64 rng(options.seed * 1000003 + static_cast<uint64_t>(index));
  const int64_t vocab = scheduler.model().spec().vocab_size;
  start_line->prepared.DecrementCount();
  start_line->go.WaitForNotification();
  while (true) {
    auto request = std::make_unique<scheduler::GenerationRequest>();
    const int64_t prompt_len = options.prompt_len.Draw(rng);
    request->prompt = client::cli::RandomTokenIds(prompt_len, vocab, rng);
    request->max_new_tokens = options.output_len.Draw(rng);
    // Greedy, no stop id: every request runs exactly its drawn length.
    const Clock::time_point start = Clock::now();
    const bool counted = start >= start_line->measure_start;
    if (counted && start >= start_line->stop) break;
    auto outcome = std::make_shared<Outcome>();
    auto sink = std::make_unique<RecordingSink>(start, outcome);
    request->sink = sink.get();
    request->arrival = absl::Now();
    absl::StatusOr<scheduler::SequenceId> submitted = scheduler.Submit(std::move(request));
    if (submitted.ok()) {
      sink.release();  // deletes itself in OnFinished
      outcome->done.WaitForNotification();
    } else {
      outcome->status = submitted.status();
      outcome->end = Clock::now();
    }
    if (counted) tally->Record(start, prompt_len, *outcome);
  }
}

}  // namespace

absl::Status ValidateGenerationLoad(const scheduler::GenerationScheduler& scheduler,
                                    const GenerationLoadOptions& options) {
  if (options.streams < 1 || options.streams > scheduler.options().max_queue_requests) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency: each value must be between 1 and the queue's ",
                     scheduler.options().max_queue_requests, ", got ", options.streams));
  }
  // A day at most: the clock arithmetic of a run stays far from overflow.
  if (options.duration <= absl::ZeroDuration() || options.duration > absl::Hours(24)) {
    return absl::InvalidArgumentError("--duration must be positive and at most 24h");
  }
  if (options.warmup < absl::ZeroDuration() || options.warmup > absl::Hours(24)) {
    return absl::InvalidArgumentError("--warmup must be between 0 and 24h");
  }
  if (options.prompt_len.min < 1 || options.output_len.min < 1) {
    return absl::InvalidArgumentError("--prompt-len and --output-len must be at least 1");
  }
  // The longest request must fit the model and the KV cache, or every such request would be
  // refused at once and the streams would spin on refusals.
  const int64_t cache_tokens = scheduler.kv_total_blocks() * scheduler.options().kv_block_tokens;
  const int64_t limit = std::min(scheduler.max_model_len(), cache_tokens);
  if (options.output_len.max > limit || options.prompt_len.max > limit - options.output_len.max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt-len up to ", options.prompt_len.max, " plus --output-len up to ",
        options.output_len.max, " is beyond the ", limit, " tokens one sequence may hold (model ",
        scheduler.max_model_len(), ", KV cache ", cache_tokens, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationLoadReport> RunGenerationLoad(scheduler::GenerationScheduler& scheduler,
                                                       const GenerationLoadOptions& options) {
  if (absl::Status valid = ValidateGenerationLoad(scheduler, options); !valid.ok()) return valid;
  std::vector<Tally> tallies(static_cast<size_t>(options.streams));
  StartLine start_line(options.streams);
  std::vector<std::thread> streams;
  streams.reserve(tallies.size());
  for (int i = 0; i < options.streams; ++i) {
    streams.emplace_back(Stream, std::ref(scheduler), std::cref(options), i, &start_line,
                         &tallies[static_cast<size_t>(i)]);
  }
  start_line.prepared.Wait();
  start_line.start = Clock::now();
  start_line.measure_start = start_line.start + client::cli::ToClock(options.warmup);
  start_line.stop = start_line.measure_start + client::cli::ToClock(options.duration);
  start_line.go.Notify();
  // The scheduler's counters from the end of the warm-up to the last counted request's end
  // (nothing runs after it: every stream has stopped submitting).
  std::this_thread::sleep_until(start_line.measure_start);
  const scheduler::GenerationStats before = scheduler.stats();
  for (std::thread& stream : streams) stream.join();
  const scheduler::GenerationStats after = scheduler.stats();

  Tally tally;
  for (const Tally& t : tallies) tally.Merge(t);
  GenerationLoadReport report;
  report.streams = options.streams;
  report.seconds =
      tally.first_start < tally.last_end ? Ms(tally.last_end - tally.first_start) / 1e3 : 0;
  report.requests_completed = tally.completed;
  report.requests_failed = tally.failed;
  report.errors = std::move(tally.errors);
  report.prompt_tokens = tally.prompt_tokens;
  report.output_tokens = tally.output_tokens;
  if (report.seconds > 0) {
    report.output_tokens_per_second = static_cast<double>(tally.output_tokens) / report.seconds;
    report.requests_per_second = static_cast<double>(tally.completed) / report.seconds;
  }
  report.ttft_ms = client::cli::Summarize(std::move(tally.samples.ttft_ms));
  report.itl_ms = client::cli::Summarize(std::move(tally.samples.itl_ms));
  report.tpot_ms = client::cli::Summarize(std::move(tally.samples.tpot_ms));
  report.e2e_ms = client::cli::Summarize(std::move(tally.samples.e2e_ms));
  report.steps = after.steps - before.steps;
  report.step_tokens = after.step_tokens - before.step_tokens;
  report.padding_tokens = after.padding_tokens - before.padding_tokens;
  report.preemptions = after.preemptions - before.preemptions;
  return report;
}

}  // namespace moe::bench
