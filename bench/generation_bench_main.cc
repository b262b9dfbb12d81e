// moe-generation-bench: continuous batching against static batching, in process. For each
// batching policy and number of concurrent streams it loads the decoder model on the chosen
// backend, starts a GenerationScheduler on it (the scheduler moe-server runs, metrics off), puts
// a closed-loop load on it (bench/generation_load.h: random prompts, output lengths drawn
// log-uniformly, exact, greedy) and prints one table: output tokens/s, requests/s, time to first
// token, time per output token, steps and the share of padding rows, then the ratio the
// generation target is stated in (output tokens/s, continuous / static, at the most streams).
//
// bench/generate_bench.sh measures the same through moe-server and moe-client over gRPC; this
// one needs neither, so tests/gpu/check.sh runs it on the CUDA backend.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/command_line.h"
#include "bench/generation_load.h"
#include "bench/generation_report.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/decoder/kv_cache_sizing.h"
#include "server/engine/moe_backend.h"
#include "server/scheduler/generation_scheduler.h"

ABSL_FLAG(std::string, model, MOE_SOURCE_DIR "/tests/fixtures/mixtral-tiny-bf16",
          "Decoder model directory (config.json + safetensors). bench/generate_bench.sh makes a "
          "larger synthetic one in BUILD/bench/mixtral-d512 (moe-make-synthetic --kind mixtral).");
ABSL_FLAG(std::string, backend, "auto", "auto, cpu or cuda.");
ABSL_FLAG(std::string, concurrency, "1,8,32", "Comma-separated numbers of concurrent streams.");
ABSL_FLAG(std::string, batching, "continuous,static,static-early-exit",
          "Comma-separated batching policies (moe-server's --generation-batching values).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(60), "Measured time of each run.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(10),
          "Time each run loads the scheduler before measuring.");
ABSL_FLAG(std::string, prompt_len, "16:64", "Prompt length range, uniform: N or MIN:MAX.");
ABSL_FLAG(std::string, output_len, "8:400", "Output length range: N or MIN:MAX.");
ABSL_FLAG(std::string, output_len_spread, "log-uniform",
          "How output lengths spread over --output-len: uniform or log-uniform.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the workload (prompts and lengths).");
ABSL_FLAG(int64_t, max_batch_tokens, 256, "Tokens in one forward pass (as moe-server's flag).");
ABSL_FLAG(int64_t, max_running_sequences, 256, "Sequences holding KV blocks at once.");
ABSL_FLAG(uint64_t, kv_cache_bytes, uint64_t{1} << 30, "KV-cache pool of each run, in bytes.");
ABSL_FLAG(double, kv_cache_memory_fraction, 0.0,
          "Size the pool as this fraction of the memory free once the model is loaded "
          "(0: use --kv-cache-bytes).");
ABSL_FLAG(std::string, json, "", "Also write the setup and the runs as JSON to this file.");

namespace moe::bench {
namespace {

constexpr char kName[] = "moe-generation-bench";

absl::StatusOr<std::vector<int>> ParseConcurrency(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int value = 0;
    if (!absl::SimpleAtoi(item, &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--concurrency: '", std::string(item), "' is not a positive integer"));
    }
    values.push_back(value);
  }
  if (values.empty()) return absl::InvalidArgumentError("--concurrency names no value");
  return values;
}

absl::StatusOr<std::vector<scheduler::GenerationBatching>> ParseBatchings(const std::string& text) {
  std::vector<scheduler::GenerationBatching> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    scheduler::GenerationBatching batching;
    if (!scheduler::ParseGenerationBatching(std::string(item), &batching)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batching: '", std::string(item),
                       "' is not one of continuous, static, static-early-exit"));
    }
    values.push_back(batching);
  }
  if (values.empty()) return absl::InvalidArgumentError("--batching names no policy");
  return values;
}

// The command line's values, checked.
struct Settings {
  engine::BackendChoice backend;
  std::vector<int> concurrency;
  std::vector<scheduler::GenerationBatching> batchings;
  GenerationLoadOptions load;
  scheduler::GenerationOptions generation;
  double kv_cache_memory_fraction = 0;
};

absl::StatusOr<Settings> ReadSettings() {
  Settings settings;
  absl::StatusOr<engine::BackendChoice> backend =
      engine::ParseBackendChoice(absl::GetFlag(FLAGS_backend));
  if (!backend.ok()) return backend.status();
  settings.backend = *backend;
  absl::StatusOr<std::vector<int>> concurrency = ParseConcurrency(absl::GetFlag(FLAGS_concurrency));
  if (!concurrency.ok()) return concurrency.status();
  settings.concurrency = *std::move(concurrency);
  absl::StatusOr<std::vector<scheduler::GenerationBatching>> batchings =
      ParseBatchings(absl::GetFlag(FLAGS_batching));
  if (!batchings.ok()) return batchings.status();
  settings.batchings = *std::move(batchings);

  settings.load.duration = absl::GetFlag(FLAGS_duration);
  settings.load.warmup = absl::GetFlag(FLAGS_warmup);
  settings.load.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<client::cli::IntRange> prompt_len =
      client::cli::ParseIntRange(absl::GetFlag(FLAGS_prompt_len), "prompt-len");
  if (!prompt_len.ok()) return prompt_len.status();
  settings.load.prompt_len = *prompt_len;
  absl::StatusOr<client::cli::IntRange> output_len =
      client::cli::ParseIntRange(absl::GetFlag(FLAGS_output_len), "output-len");
  if (!output_len.ok()) return output_len.status();
  absl::StatusOr<client::cli::Spread> spread =
      client::cli::ParseSpread(absl::GetFlag(FLAGS_output_len_spread), "output-len-spread");
  if (!spread.ok()) return spread.status();
  settings.load.output_len = *output_len;
  settings.load.output_len.spread = *spread;

  settings.generation.model_name = "lm";
  settings.generation.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  settings.generation.max_running_sequences = absl::GetFlag(FLAGS_max_running_sequences);
  settings.generation.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  settings.kv_cache_memory_fraction = absl::GetFlag(FLAGS_kv_cache_memory_fraction);
  if (!(settings.kv_cache_memory_fraction >= 0 &&
        settings.kv_cache_memory_fraction <= engine::kMaxKvCacheMemoryFraction)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-memory-fraction must be between 0 and ", engine::kMaxKvCacheMemoryFraction));
  }
  return settings;
}

// One run: a fresh model and scheduler, so that no run inherits another's cache or queue.
absl::StatusOr<GenerationRun> RunOnce(const Settings& settings, engine::MoEBackend& backend,
                                      const std::string& model_dir,
                                      scheduler::GenerationBatching batching, int streams) {
  absl::StatusOr<std::unique_ptr<engine::DecoderModel>> model =
      engine::DecoderModel::Load(model_dir, &backend);
  if (!model.ok()) return model.status();
  scheduler::GenerationOptions options = settings.generation;
  options.batching = batching;
  if (settings.kv_cache_memory_fraction > 0) {
    absl::StatusOr<uint64_t> bytes =
        engine::KvCacheBytesForFraction(settings.kv_cache_memory_fraction, backend);
    if (!bytes.ok()) return bytes.status();
    options.kv_cache_bytes = *bytes;
  }
  absl::StatusOr<std::unique_ptr<scheduler::GenerationScheduler>> scheduler =
      scheduler::GenerationScheduler::Create(*std::move(model), options);
  if (!scheduler.ok()) return scheduler.status();
  GenerationLoadOptions load = settings.load;
  load.streams = streams;
  absl::StatusOr<GenerationLoadReport> report = RunGenerationLoad(**scheduler, load);
  if (!report.ok()) return report.status();
  return GenerationRun{.batching = std::string(scheduler::GenerationBatchingName(batching)),
                       .kv_cache_blocks = (*scheduler)->kv_total_blocks(),
                       .report = *std::move(report)};
}

int Run(int argc, char** argv) {
  constexpr char kSummary[] =
      "moe-generation-bench: continuous against static batching of a decoder model, in process\n"
      "(the generation scheduler and the model; no gRPC).\n\n"
      "  moe-generation-bench --model build/bench/mixtral-d512 --backend cuda\n"
      "  moe-generation-bench --duration 5s --warmup 1s --concurrency 8 --batching continuous\n";
  if (WantsHelp(argc, argv)) {
    std::printf("%s", Usage(kSummary, "generation_bench_main.cc").c_str());
    return 0;
  }
  absl::StatusOr<CheckedCommandLine> command_line = CheckedCommandLine::Check(argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, std::string(command_line.status().message()).c_str());
    return 2;
  }
  std::vector<char*> args = command_line->Argv();
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  absl::StatusOr<Settings> settings = ReadSettings();
  if (!settings.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, std::string(settings.status().message()).c_str());
    return 2;
  }

  absl::StatusOr<std::unique_ptr<engine::MoEBackend>> backend =
      engine::CreateBackend({.choice = settings->backend});
  if (!backend.ok()) {
    std::fprintf(stderr, "%s: %s\n", kName, backend.status().ToString().c_str());
    return 1;
  }
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  std::vector<GenerationRun> runs;
  for (scheduler::GenerationBatching batching : settings->batchings) {
    for (int streams : settings->concurrency) {
      std::fprintf(stderr, "%s: %s batching, %d streams\n", kName,
                   std::string(scheduler::GenerationBatchingName(batching)).c_str(), streams);
      absl::StatusOr<GenerationRun> run =
          RunOnce(*settings, **backend, model_dir, batching, streams);
      if (!run.ok()) {
        std::fprintf(stderr, "%s: %s\n", kName, run.status().ToString().c_str());
        return run.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
      }
      runs.push_back(*std::move(run));
    }
  }
  const GenerationBenchSetup setup{
      .model = model_dir,
      .backend = std::string(engine::BackendKindName((*backend)->kind())),
      .device = (*backend)->device_description(),
      .load = settings->load};
  std::printf("%s", FormatGenerationTable(setup, runs).c_str());
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << GenerationRunsJson(setup, runs) << "\n";
    if (!out) {
      std::fprintf(stderr, "%s: cannot write %s\n", kName, path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) { return moe::bench::Run(argc, argv); }
