// moe-metrics-cost: what metrics add to the server's hot path, measured in process where a
// shared machine's noise does not drown it. For one model and batch size it times, interleaved:
//   plain      the forward pass the scheduler runs without metrics
//   stats      the same pass filling what the metrics read (per-expert counts, per-layer time,
//              gate entropy)
//   timed      a profiling pass (experts timed one by one), run on a sampled fraction of passes
//   bookkeeping what the scheduler and gRPC layer record per batch with metrics on (one batch
//              observation, and per request: accepted rows, queue/compute times, the outcome)
// and prints medians and the cost relative to the plain pass: stats + bookkeeping is what every
// pass pays (target <= 2%), timed what a sampled pass pays.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "bench/command_line.h"
#include "server/engine/model_loader.h"
#include "server/engine/moe_backend.h"
#include "server/metrics/server_metrics.h"

ABSL_FLAG(std::string, model, "",
          "Model directory (config.json + safetensors) to measure; empty: the built-in 'digits' "
          "model. bench/metrics_overhead.sh's synthetic model is in BUILD/bench/synthetic-d1024.");
ABSL_FLAG(int64_t, rows, 64, "Rows per forward pass (a batch).");
ABSL_FLAG(int64_t, requests_per_batch, 64,
          "Requests the batch is made of (per-request bookkeeping is counted this many times).");
ABSL_FLAG(int, repeats, 30, "Timed repetitions of each variant (interleaved).");
ABSL_FLAG(
    double, sample_rate, 0.01,
    "Expert timing sample rate the average cost is quoted for (--expert-timing-sample-rate).");

namespace moe::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0.0 : values[values.size() / 2];
}

int Run(int argc, char** argv) {
  constexpr char kSummary[] =
      "moe-metrics-cost: the hot-path cost of moe-server's metrics, in process.\n\n"
      "  moe-metrics-cost --model build/bench/synthetic-d1024 --rows 64\n";
  if (WantsHelp(argc, argv)) {
    std::printf("%s", Usage(kSummary, "metrics_cost_main.cc").c_str());
    return 0;
  }
  absl::StatusOr<CheckedCommandLine> command_line = CheckedCommandLine::Check(argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "moe-metrics-cost: %s\n",
                 std::string(command_line.status().message()).c_str());
    return 2;
  }
  std::vector<char*> args = command_line->Argv();
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  const int64_t rows = absl::GetFlag(FLAGS_rows);
  const int64_t requests = absl::GetFlag(FLAGS_requests_per_batch);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const double sample_rate = absl::GetFlag(FLAGS_sample_rate);
  if (rows < 1 || requests < 1 || requests > rows || repeats < 1 || sample_rate < 0 ||
      sample_rate > 1) {
    std::fprintf(stderr,
                 "moe-metrics-cost: need --rows >= 1, 1 <= --requests-per-batch <= --rows, "
                 "--repeats >= 1, 0 <= --sample-rate <= 1\n");
    return 2;
  }

  std::unique_ptr<engine::MoEBackend> backend = engine::CreateCpuBackend();
  const std::string dir = absl::GetFlag(FLAGS_model);
  absl::StatusOr<std::unique_ptr<engine::ServableModel>> loaded =
      dir.empty() ? engine::LoadBuiltinModel(*backend)
                  : engine::LoadModelFromDirectory("model", dir, *backend);
  if (!loaded.ok()) {
    std::fprintf(stderr, "moe-metrics-cost: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  engine::ServableModel& model = **loaded;
  const engine::ModelDescription& d = model.description();
  if (!d.tensor_servable) {
    std::fprintf(stderr, "moe-metrics-cost: model '%s' takes no tensor requests\n", d.name.c_str());
    return 1;
  }
  const int64_t layers = d.num_moe_layers;
  const int64_t experts = d.num_experts;

  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> input(static_cast<size_t>(rows * d.input_width));
  for (float& v : input) v = uniform(rng);
  std::vector<float> output(static_cast<size_t>(rows * d.output_width));
  std::vector<int64_t> counts(static_cast<size_t>(layers * experts));
  std::vector<double> layer_seconds(static_cast<size_t>(layers));
  std::vector<double> entropy(static_cast<size_t>(layers));
  std::vector<double> expert_seconds(static_cast<size_t>(layers * experts));

  engine::ModelRunOutputs plain;
  plain.output = output.data();
  engine::ModelRunOutputs stats = plain;
  stats.expert_token_counts = counts.data();
  stats.layer_seconds = layer_seconds.data();
  stats.gate_entropy_sum = entropy.data();
  engine::ModelRunOutputs timed = stats;
  timed.expert_seconds = expert_seconds.data();

  metrics::ModelMetricsOptions options;
  options.max_batch_rows = rows;
  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> server_metrics =
      metrics::ServerMetrics::Create({"model"}, options);
  if (!server_metrics.ok()) return 1;
  metrics::ModelMetrics& m = *(*server_metrics)->ForModel("model");
  metrics::LoadedModelInfo info;
  info.num_moe_layers = layers;
  info.num_experts = experts;
  info.top_k = d.top_k;
  if (!m.SetLoaded(info).ok()) return 1;

  auto run = [&](const engine::ModelRunOutputs& outputs) {
    const Clock::time_point start = Clock::now();
    const absl::Status status = model.Run(input.data(), rows, outputs);
    if (!status.ok()) {
      std::fprintf(stderr, "moe-metrics-cost: %s\n", status.ToString().c_str());
      std::exit(1);
    }
    return Seconds(start);
  };
  auto bookkeeping = [&] {
    const Clock::time_point start = Clock::now();
    m.SetRunning(requests);
    for (int64_t r = 0; r < requests; ++r) {
      m.RecordAccepted(rows / requests);
      m.SetQueued(requests - r);
      m.RecordComputed(absl::Microseconds(200), absl::Milliseconds(5));
      m.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(6));
    }
    metrics::BatchObservation batch;
    batch.rows = rows;
    batch.requests = requests;
    batch.seconds = 0.005;
    batch.expert_tokens = counts;
    batch.layer_seconds = layer_seconds;
    batch.entropy_sum = entropy;
    m.RecordBatch(batch);
    m.SetRunning(0);
    return Seconds(start);
  };

  for (int i = 0; i < 3; ++i) {  // warm-up: workspaces, caches, OpenMP team
    run(plain);
    run(stats);
    run(timed);
  }
  std::vector<double> t_plain, t_stats, t_timed, t_book;
  for (int i = 0; i < repeats; ++i) {
    t_plain.push_back(run(plain));
    t_stats.push_back(run(stats));
    t_timed.push_back(run(timed));
    t_book.push_back(bookkeeping());
  }
  const double p = Median(t_plain);
  const double s = Median(t_stats);
  const double t = Median(t_timed);
  const double b = Median(t_book);
  std::printf(
      "model %s (%s, %lld MoE layers x %lld experts, top-%d), %lld rows in %lld requests, "
      "%d interleaved repeats, CPU backend (%s)\n\n",
      d.name.c_str(), d.architecture.c_str(), static_cast<long long>(layers),
      static_cast<long long>(experts), d.top_k, static_cast<long long>(rows),
      static_cast<long long>(requests), repeats, d.device.c_str());
  std::printf("| variant | median ms | vs plain |\n|---|---|---|\n");
  std::printf("| plain pass | %.3f | 1.000 |\n", p * 1e3);
  std::printf("| pass + statistics | %.3f | %.3f |\n", s * 1e3, s / p);
  std::printf("| profiling pass (experts timed) | %.3f | %.3f |\n", t * 1e3, t / p);
  std::printf("| metrics bookkeeping per batch | %.4f | %.4f |\n\n", b * 1e3, b / p);
  // The statistics' own cost is below the run-to-run noise of a pass; quote the difference of
  // medians as measured, sign included.
  const double every_pass = (s - p + b) / p;
  std::printf(
      "every pass: statistics %+.2f%% + bookkeeping %+.3f%% = %+.2f%% of a plain pass "
      "(target <= 2%%: %s)\n",
      100 * (s - p) / p, 100 * b / p, 100 * every_pass, every_pass <= 0.02 ? "met" : "NOT met");
  std::printf(
      "sampled passes: a profiling pass costs %+.2f%%; at --expert-timing-sample-rate %g "
      "that averages %+.3f%%\n\n",
      100 * (t - s) / p, sample_rate, 100 * sample_rate * (t - s) / p);
  return 0;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) { return moe::bench::Run(argc, argv); }
