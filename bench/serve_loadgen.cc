// moe-loadgen: closed-loop load on a running moe-server (or any KServe v2 gRPC server). N client
// threads, each on its own connection, send synchronous ModelInfer calls of random rows of the
// model's width (read from ModelMetadata) back to back, for a duration or a number of requests,
// after an untimed warm-up. Prints requests/s, latency percentiles, the server's own queue and
// compute times and batch sizes (response parameters), and errors by gRPC code.
//
// Exit status: 0 when at least one timed request succeeded (errors are reported, not fatal),
// 1 when none did or the server could not be asked for the model's metadata, 2 a usage error.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/command_line.h"
#include "grpcpp/grpcpp.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, target, "127.0.0.1:8001", "The server, HOST:PORT.");
ABSL_FLAG(std::string, model, "digits", "The model to send requests to.");
ABSL_FLAG(int32_t, concurrency, 1,
          "Client threads, each with its own connection and one call in flight at a time.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "How long to measure, after the warm-up (ignored when --requests is set).");
ABSL_FLAG(int64_t, requests, 0,
          "Measure this many requests instead of a duration (0: use --duration).");
ABSL_FLAG(int64_t, rows_per_request, 1, "Rows (samples) in each request.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "Load sent before measuring starts; its calls are not counted.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60), "gRPC deadline of each call.");
ABSL_FLAG(absl::Duration, wait_ready, absl::ZeroDuration(),
          "First wait up to this long for the server's ServerReady to say true (0: do not wait).");
ABSL_FLAG(bool, raw, false,
          "Send the rows in raw_input_contents (FP32 bytes) instead of typed fp32_contents.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random inputs.");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of the text report.");

namespace moe::bench {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kRequestsPerThread = 8;  // distinct random requests each thread cycles through

constexpr char kSummary[] =
    "moe-loadgen: closed-loop ModelInfer load on a KServe v2 gRPC server (moe-server).\n"
    "\n"
    "  moe-loadgen --target 127.0.0.1:8001 --model digits --concurrency 8 --duration 10s\n"
    "  moe-loadgen --concurrency 64 --requests 5000 --rows-per-request 4 --json\n"
    "\n"
    "Each of --concurrency threads keeps one call in flight on its own connection. Reports\n"
    "requests/s, latency p50/p90/p99/max, the means of the server's queue_us, compute_us and\n"
    "batch_rows response parameters, and errors by gRPC status code.\n"
    "\n"
    "Exit status: 0 at least one measured request succeeded; 1 none did, or the model's metadata\n"
    "could not be read; 2 a usage error.";

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // One connection per client thread, not one shared by every channel to the same target.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// Polls ServerReady until it says true or `timeout` passes. A fresh channel per attempt: one
// whose connection was refused stays failed for seconds (gRPC's reconnect backoff).
absl::Status WaitReady(const std::string& target, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last = "no answer";
  while (absl::Now() < deadline) {
    auto stub = GRPCInferenceService::NewStub(NewChannel(target));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    inference::ServerReadyResponse response;
    const grpc::Status status = stub->ServerReady(&context, {}, &response);
    if (status.ok() && response.ready()) return absl::OkStatus();
    last = status.ok() ? "ready=false" : status.error_message();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::UnavailableError(
      absl::StrCat(target, " not ready after ", absl::FormatDuration(timeout), " (", last, ")"));
}

struct ModelInput {
  std::string name;
  int64_t width = 0;
};

// The model's input name and row width, from ModelMetadata ([-1, width] FP32).
absl::StatusOr<ModelInput> ReadModelInput(const std::string& target, const std::string& model) {
  auto stub = GRPCInferenceService::NewStub(NewChannel(target));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  inference::ModelMetadataRequest request;
  request.set_name(model);
  inference::ModelMetadataResponse response;
  const grpc::Status status = stub->ModelMetadata(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("ModelMetadata(", model, ") at ", target,
                                               " failed: ", status.error_message(), " (code ",
                                               static_cast<int>(status.error_code()), ")"));
  }
  if (response.inputs_size() != 1 || response.inputs(0).shape_size() != 2 ||
      response.inputs(0).shape(1) <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", model,
                     "' does not take one [rows, width] input: ", response.ShortDebugString()));
  }
  return ModelInput{response.inputs(0).name(), response.inputs(0).shape(1)};
}

ModelInferRequest RandomRequest(const std::string& model, const ModelInput& input, int64_t rows,
                                bool raw, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(rows * input.width);
  for (float& v : values) v = dist(rng);
  ModelInferRequest request;
  request.set_model_name(model);
  auto* tensor = request.add_inputs();
  tensor->set_name(input.name);
  tensor->set_datatype("FP32");
  tensor->add_shape(rows);
  tensor->add_shape(input.width);
  if (raw) {
    request.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  } else {
    tensor->mutable_contents()->mutable_fp32_contents()->Add(values.begin(), values.end());
  }
  return request;
}

int64_t Int64Parameter(const ModelInferResponse& response, const std::string& key) {
  const auto it = response.parameters().find(key);
  if (it == response.parameters().end()) return -1;
  if (it->second.has_int64_param()) return it->second.int64_param();
  if (it->second.has_uint64_param()) return static_cast<int64_t>(it->second.uint64_param());
  return -1;
}

// What one thread measured.
struct ThreadResult {
  std::vector<double> latency_ms;  // successful measured calls
  double queue_us_sum = 0, compute_us_sum = 0, batch_rows_sum = 0;
  int64_t with_parameters = 0;  // successes that carried all three parameters
  std::map<grpc::StatusCode, int64_t> errors;
  absl::Time first_start = absl::InfiniteFuture();  // of the first measured call
  absl::Time last_finish = absl::InfinitePast();
};

struct Plan {
  std::string target, model;
  ModelInput input;
  int concurrency = 1;
  int64_t rows = 1;
  int64_t requests = 0;  // 0: run for `duration`
  absl::Duration duration, warmup, timeout;
  bool raw = false;
  uint64_t seed = 1;
};

// When the clients start: every thread builds its requests and connects first, so neither
// shows in the warm-up or the measurement; then the main thread fixes the times and says go.
struct StartLine {
  explicit StartLine(int clients) : prepared(clients) {}
  absl::BlockingCounter prepared;
  absl::Notification go;
  absl::Time measure_start;  // written before `go`, read after
  absl::Time stop;
};

void RunClient(const Plan& plan, int index, StartLine* start_line,
               std::atomic<int64_t>* requests_left, ThreadResult* result) {
  std::mt19937_64 rng(plan.seed * 7919 + index);
  std::vector<ModelInferRequest> requests;
  for (int i = 0; i < kRequestsPerThread; ++i) {
    requests.push_back(RandomRequest(plan.model, plan.input, plan.rows, plan.raw, rng));
  }
  auto channel = NewChannel(plan.target);
  channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  auto stub = GRPCInferenceService::NewStub(channel);
  start_line->prepared.DecrementCount();
  start_line->go.WaitForNotification();
  const absl::Time measure_start = start_line->measure_start;
  const absl::Time stop = start_line->stop;
  for (int64_t call = 0;; ++call) {
    const absl::Time start = absl::Now();
    const bool measured = start >= measure_start;
    if (measured) {
      if (plan.requests > 0) {
        if (requests_left->fetch_sub(1) <= 0) break;
      } else if (start >= stop) {
        break;
      }
    }
    grpc::ClientContext context;
    // An infinite --timeout sets no deadline (adding it to now() would overflow).
    if (plan.timeout != absl::InfiniteDuration()) {
      context.set_deadline(absl::ToChronoTime(absl::Now() + plan.timeout));
    }
    ModelInferResponse response;
    const grpc::Status status =
        stub->ModelInfer(&context, requests[call % kRequestsPerThread], &response);
    const absl::Time finish = absl::Now();
    if (!measured) continue;
    result->first_start = std::min(result->first_start, start);
    result->last_finish = std::max(result->last_finish, finish);
    if (!status.ok()) {
      ++result->errors[status.error_code()];
      continue;
    }
    result->latency_ms.push_back(absl::ToDoubleMilliseconds(finish - start));
    const int64_t queue_us = Int64Parameter(response, "queue_us");
    const int64_t compute_us = Int64Parameter(response, "compute_us");
    const int64_t batch_rows = Int64Parameter(response, "batch_rows");
    if (queue_us >= 0 && compute_us >= 0 && batch_rows >= 0) {
      result->queue_us_sum += queue_us;
      result->compute_us_sum += compute_us;
      result->batch_rows_sum += batch_rows;
      ++result->with_parameters;
    }
  }
}

std::string CodeName(grpc::StatusCode code) {
  static const std::map<grpc::StatusCode, std::string> kNames = {
      {grpc::StatusCode::CANCELLED, "CANCELLED"},
      {grpc::StatusCode::UNKNOWN, "UNKNOWN"},
      {grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
      {grpc::StatusCode::NOT_FOUND, "NOT_FOUND"},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
      {grpc::StatusCode::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
      {grpc::StatusCode::INTERNAL, "INTERNAL"},
      {grpc::StatusCode::UNAVAILABLE, "UNAVAILABLE"},
      {grpc::StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
  };
  const auto it = kNames.find(code);
  return it != kNames.end() ? it->second : absl::StrCat("CODE_", static_cast<int>(code));
}

// Nearest-rank percentile of sorted values: the smallest value with at least `fraction` of
// the values at or below it (p50 of {1, 2} is 1; p99 of 100 values is the 99th, not the max).
double Percentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0.0;
  const double rank = std::ceil(fraction * static_cast<double>(sorted.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

int Run(const Plan& plan, bool json) {
  std::atomic<int64_t> requests_left(plan.requests);
  std::vector<ThreadResult> results(plan.concurrency);
  StartLine start_line(plan.concurrency);
  std::vector<std::thread> threads;
  for (int i = 0; i < plan.concurrency; ++i) {
    threads.emplace_back(RunClient, std::cref(plan), i, &start_line, &requests_left, &results[i]);
  }
  start_line.prepared.Wait();
  start_line.measure_start = absl::Now() + plan.warmup;
  start_line.stop = start_line.measure_start + plan.duration;
  start_line.go.Notify();
  for (std::thread& thread : threads) thread.join();

  std::vector<double> latencies;
  double queue_us = 0, compute_us = 0, batch_rows = 0;
  int64_t with_parameters = 0, failed = 0;
  std::map<std::string, int64_t> errors;
  // The measured window runs from the first measured call's start to the last one's finish:
  // each thread's warm-up call still in flight at measure_start is neither counted nor timed.
  absl::Time first_start = absl::InfiniteFuture();
  absl::Time last_finish = absl::InfinitePast();
  for (const ThreadResult& r : results) {
    latencies.insert(latencies.end(), r.latency_ms.begin(), r.latency_ms.end());
    queue_us += r.queue_us_sum;
    compute_us += r.compute_us_sum;
    batch_rows += r.batch_rows_sum;
    with_parameters += r.with_parameters;
    for (const auto& [code, count] : r.errors) {
      errors[CodeName(code)] += count;
      failed += count;
    }
    first_start = std::min(first_start, r.first_start);
    last_finish = std::max(last_finish, r.last_finish);
  }
  std::sort(latencies.begin(), latencies.end());
  const int64_t ok = static_cast<int64_t>(latencies.size());
  const double seconds =
      first_start < last_finish ? absl::ToDoubleSeconds(last_finish - first_start) : 1e-9;
  const double rps = ok / seconds;
  double mean_latency = 0;
  for (double v : latencies) mean_latency += v;
  if (ok > 0) mean_latency /= ok;
  const double divisor = with_parameters > 0 ? static_cast<double>(with_parameters) : 1.0;

  if (json) {
    nlohmann::json out = {
        {"target", plan.target},
        {"model", plan.model},
        {"concurrency", plan.concurrency},
        {"rows_per_request", plan.rows},
        {"seconds", seconds},
        {"requests_ok", ok},
        {"requests_failed", failed},
        {"errors", errors},
        {"requests_per_s", rps},
        {"rows_per_s", rps * plan.rows},
        {"latency_ms",
         {{"mean", mean_latency},
          {"p50", Percentile(latencies, 0.50)},
          {"p90", Percentile(latencies, 0.90)},
          {"p99", Percentile(latencies, 0.99)},
          {"max", latencies.empty() ? 0.0 : latencies.back()}}},
        {"mean_queue_us", queue_us / divisor},
        {"mean_compute_us", compute_us / divisor},
        {"mean_batch_rows", batch_rows / divisor},
    };
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "moe-loadgen  target %s  model %s  concurrency %d  rows/request %d  width %d\n",
        plan.target, plan.model, plan.concurrency, plan.rows, plan.input.width);
    std::cout << absl::StrFormat(
        "requests     %d ok, %d failed in %.2f s: %.1f requests/s, %.1f rows/s\n", ok, failed,
        seconds, rps, rps * plan.rows);
    std::cout << absl::StrFormat("latency ms   p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f\n",
                                 Percentile(latencies, 0.50), Percentile(latencies, 0.90),
                                 Percentile(latencies, 0.99),
                                 latencies.empty() ? 0.0 : latencies.back(), mean_latency);
    std::cout << absl::StrFormat(
        "server       mean queue %.0f us  mean compute %.0f us  mean batch rows %.2f\n",
        queue_us / divisor, compute_us / divisor, batch_rows / divisor);
    for (const auto& [code, count] : errors) {
      std::cout << absl::StrFormat("errors       %s %d\n", code, count);
    }
  }
  if (ok == 0) {
    std::cerr << "moe-loadgen: no measured request succeeded\n";
    return kExitFailure;
  }
  return 0;
}

absl::StatusOr<Plan> PlanFromFlags() {
  Plan plan;
  plan.target = absl::GetFlag(FLAGS_target);
  plan.model = absl::GetFlag(FLAGS_model);
  plan.concurrency = absl::GetFlag(FLAGS_concurrency);
  plan.rows = absl::GetFlag(FLAGS_rows_per_request);
  plan.requests = absl::GetFlag(FLAGS_requests);
  plan.duration = absl::GetFlag(FLAGS_duration);
  plan.warmup = absl::GetFlag(FLAGS_warmup);
  plan.timeout = absl::GetFlag(FLAGS_timeout);
  plan.raw = absl::GetFlag(FLAGS_raw);
  plan.seed = absl::GetFlag(FLAGS_seed);
  if (plan.concurrency < 1 || plan.concurrency > 4096) {
    return absl::InvalidArgumentError("--concurrency must be between 1 and 4096");
  }
  if (plan.rows < 1) return absl::InvalidArgumentError("--rows-per-request must be at least 1");
  if (plan.requests < 0) return absl::InvalidArgumentError("--requests must not be negative");
  if (plan.requests == 0 && plan.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be positive (or set --requests)");
  }
  if (plan.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--warmup must not be negative");
  }
  if (plan.timeout <= absl::ZeroDuration()) {  // inf is allowed: no deadline
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  if (plan.target.empty() || plan.model.empty()) {
    return absl::InvalidArgumentError("--target and --model must not be empty");
  }
  return plan;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) {
  if (moe::bench::WantsHelp(argc, argv)) {
    std::cout << moe::bench::Usage(moe::bench::kSummary, "serve_loadgen.cc");
    return 0;
  }
  absl::StatusOr<moe::bench::CheckedCommandLine> line =
      moe::bench::CheckedCommandLine::Check(argc, argv);
  if (!line.ok()) {
    std::cerr << "moe-loadgen: " << line.status().message() << "\n";
    return moe::bench::kExitUsage;
  }
  std::vector<char*> args = line->Argv();
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  absl::StatusOr<moe::bench::Plan> plan = moe::bench::PlanFromFlags();
  if (!plan.ok()) {
    std::cerr << "moe-loadgen: " << plan.status().message() << "\n";
    return moe::bench::kExitUsage;
  }
  if (const absl::Duration wait = absl::GetFlag(FLAGS_wait_ready); wait > absl::ZeroDuration()) {
    if (absl::Status ready = moe::bench::WaitReady(plan->target, wait); !ready.ok()) {
      std::cerr << "moe-loadgen: " << ready.message() << "\n";
      return moe::bench::kExitFailure;
    }
  }
  absl::StatusOr<moe::bench::ModelInput> input =
      moe::bench::ReadModelInput(plan->target, plan->model);
  if (!input.ok()) {
    std::cerr << "moe-loadgen: " << input.status().message() << "\n";
    return moe::bench::kExitFailure;
  }
  plan->input = *input;
  return moe::bench::Run(*plan, absl::GetFlag(FLAGS_json));
}
