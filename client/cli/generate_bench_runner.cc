#include "client/cli/generate_bench_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cli/load_clock.h"
#include "client/cli/stream_timing.h"

namespace moe::client::cli {
namespace {

// What one stream's counted requests measured.
struct Tally {
  StreamSamples samples;
  double server_ttft_ms = 0;
  int64_t completed = 0, failed = 0, prompt_tokens = 0, output_tokens = 0, preemptions = 0;
  std::map<std::string, int64_t> errors, finish_reasons;
  std::map<std::string, std::string> error_messages;
  Clock::time_point first_start = Clock::time_point::max();
  Clock::time_point last_finish = Clock::time_point::min();

  void Record(Clock::time_point start, Clock::time_point finish, int64_t prompt_len,
              const std::vector<TokenArrival>& arrivals,
              const absl::StatusOr<GenerateResult>& result) {
    first_start = std::min(first_start, start);
    last_finish = std::max(last_finish, finish);
    if (!result.ok()) {
      ++failed;
      const std::string code = absl::StatusCodeToString(result.status().code());
      ++errors[code];
      error_messages.emplace(code, result.status().message());
      return;
    }
    const StreamTiming timing = AccountStream(arrivals, Ms(finish - start));
    ++completed;
    prompt_tokens += prompt_len;
    output_tokens += timing.tokens;
    preemptions += result->preemptions;
    ++finish_reasons[std::string(FinishReasonName(result->finish_reason))];
    samples.Add(timing);
    server_ttft_ms += absl::ToDoubleMilliseconds(result->server_time_to_first_token);
  }

  void Merge(Tally&& other) {
    samples.Merge(other.samples);
    server_ttft_ms += other.server_ttft_ms;
    completed += other.completed;
    failed += other.failed;
    prompt_tokens += other.prompt_tokens;
    output_tokens += other.output_tokens;
    preemptions += other.preemptions;
    for (const auto& [code, count] : other.errors) errors[code] += count;
    for (const auto& [reason, count] : other.finish_reasons) finish_reasons[reason] += count;
    error_messages.merge(other.error_messages);
    first_start = std::min(first_start, other.first_start);
    last_finish = std::max(last_finish, other.last_finish);
  }
};

void Stream(const GenerateBenchOptions& options, Client* client, int index, StartLine* start_line,
            std::atomic<int64_t>* requests_left, Tally* tally) {
  std::mt19937_64 rng(options.seed * 1000003 + static_cast<uint64_t>(index));
  (void)client->ServerLive();  // connects; a server that is down shows in the counted requests
  start_line->prepared.DecrementCount();
  start_line->go.WaitForNotification();
  std::vector<TokenArrival> arrivals;
  while (true) {
    const int64_t prompt_len = options.prompt_len.Draw(rng);
    const std::vector<int32_t> prompt = RandomTokenIds(prompt_len, options.vocab_size, rng);
    GenerateOptions generate = options.generate;
    generate.max_new_tokens = static_cast<int32_t>(options.max_new_tokens.Draw(rng));
    const Clock::time_point start = Clock::now();
    const bool counted = start >= start_line->measure_start;
    if (counted) {
      if (options.requests > 0) {
        if (requests_left->fetch_sub(1) <= 0) break;
      } else if (start >= start_line->stop) {
        break;
      }
    }
    arrivals.clear();
    absl::StatusOr<GenerateResult> result =
        client->Generate(options.model, prompt, generate, [&](const GenerateChunk& chunk) {
          arrivals.push_back(TokenArrival{.ms = Ms(Clock::now() - start),
                                          .tokens = static_cast<int64_t>(chunk.token_ids.size())});
          return true;
        });
    const Clock::time_point finish = Clock::now();
    if (counted) tally->Record(start, finish, prompt_len, arrivals, result);
  }
}

}  // namespace

absl::Status ValidateGenerateBenchOptions(const GenerateBenchOptions& options) {
  if (options.concurrency < 1 || options.concurrency > 4096) {
    return absl::InvalidArgumentError("--concurrency must be between 1 and 4096");
  }
  if (options.requests < 0) return absl::InvalidArgumentError("--requests must not be negative");
  if (options.requests == 0 && options.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be positive (or set --requests)");
  }
  if (options.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--warmup must not be negative");
  }
  if (options.vocab_size < 1 || options.vocab_size > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vocab-size must be between 1 and 2^31, got ", options.vocab_size));
  }
  if (options.prompt_len.min < 1) {
    return absl::InvalidArgumentError("--prompt-len must be at least 1");
  }
  if (options.max_new_tokens.min < 1 || options.max_new_tokens.max > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("--max-new-tokens must be between 1 and 2^30");
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateBenchReport> RunGenerateBench(const std::vector<Client*>& clients,
                                                     const GenerateBenchOptions& options) {
  if (clients.empty()) return absl::InvalidArgumentError("no connection to send requests over");
  if (absl::Status valid = ValidateGenerateBenchOptions(options); !valid.ok()) return valid;
  std::atomic<int64_t> requests_left(options.requests);
  std::vector<Tally> tallies(options.concurrency);
  StartLine start_line(options.concurrency);
  std::vector<std::thread> streams;
  for (int i = 0; i < options.concurrency; ++i) {
    streams.emplace_back(Stream, std::cref(options), clients[i % clients.size()], i, &start_line,
                         &requests_left, &tallies[i]);
  }
  start_line.prepared.Wait();
  start_line.measure_start = Clock::now() + ToClock(options.warmup);
  start_line.stop = start_line.measure_start + ToClock(options.duration);
  start_line.go.Notify();
  for (std::thread& stream : streams) stream.join();
  Tally tally;
  for (Tally& t : tallies) tally.Merge(std::move(t));

  GenerateBenchReport report;
  report.target = options.target;
  report.model = options.model;
  report.concurrency = options.concurrency;
  report.connections = static_cast<int>(std::min<size_t>(clients.size(), options.concurrency));
  report.seed = options.seed;
  report.vocab_size = options.vocab_size;
  report.prompt_len = options.prompt_len;
  report.max_new_tokens = options.max_new_tokens;
  report.ignore_eos = options.generate.ignore_eos;
  report.temperature = options.generate.temperature;
  report.warmup_s = absl::ToDoubleSeconds(options.warmup);
  report.seconds =
      tally.first_start < tally.last_finish ? Ms(tally.last_finish - tally.first_start) / 1e3 : 0;
  report.requests_completed = tally.completed;
  report.requests_failed = tally.failed;
  report.errors = std::move(tally.errors);
  report.error_messages = std::move(tally.error_messages);
  report.finish_reasons = std::move(tally.finish_reasons);
  report.prompt_tokens = tally.prompt_tokens;
  report.output_tokens = tally.output_tokens;
  report.preemptions = tally.preemptions;
  report.ttft_ms = Summarize(std::move(tally.samples.ttft_ms));
  report.itl_ms = Summarize(std::move(tally.samples.itl_ms));
  report.tpot_ms = Summarize(std::move(tally.samples.tpot_ms));
  report.e2e_ms = Summarize(std::move(tally.samples.e2e_ms));
  if (tally.completed > 0) {
    report.mean_server_ttft_ms = tally.server_ttft_ms / static_cast<double>(tally.completed);
  }
  return report;
}

}  // namespace moe::client::cli
