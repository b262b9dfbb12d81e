// moe-decoder-step-bench: what one forward pass of a decoder language model costs as the batch
// grows (Google Benchmark). Each case holds `batch` sequences with `context` tokens already in
// the KV cache and times DecoderModel::Step running one decode token for each of them: the
// pass continuous batching runs at every iteration. Static batching's long tail runs the same
// pass with few sequences, so how the time per token falls with the batch is what the
// continuous/static throughput ratio of bench/generate_bench.sh is made of.
//
//   moe-decoder-step-bench [--model DIR] [--backend cpu|cuda] [Google Benchmark flags]
//
// --backend: auto, cpu (the default) or cuda. --model defaults to the Mixtral reference checkpoint
// (tests/fixtures/mixtral-tiny-bf16); bench/generate_bench.sh makes the larger synthetic one
// (build/bench/mixtral-d512). Time is per pass; the tokens_per_second counter is decode tokens (one
// per sequence) per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/decoder/kv_cache.h"
#include "server/engine/moe_backend.h"

namespace {

struct Settings {
  std::string model_dir = MOE_SOURCE_DIR "/tests/fixtures/mixtral-tiny-bf16";
  std::string backend = "cpu";
};

Settings& settings() {
  static Settings instance;
  return instance;
}

// The model, loaded once for every case.
struct LoadedModel {
  std::unique_ptr<moe::engine::MoEBackend> backend;
  std::unique_ptr<moe::engine::DecoderModel> model;
};

LoadedModel* Model() {
  static LoadedModel* loaded = [] {
    auto result = std::make_unique<LoadedModel>();
    absl::StatusOr<moe::engine::BackendChoice> choice =
        moe::engine::ParseBackendChoice(settings().backend);
    if (!choice.ok()) {
      std::fprintf(stderr, "moe-decoder-step-bench: %s\n", choice.status().ToString().c_str());
      return static_cast<LoadedModel*>(nullptr);
    }
    absl::StatusOr<std::unique_ptr<moe::engine::MoEBackend>> backend =
        moe::engine::CreateBackend({.choice = *choice});
    if (!backend.ok()) {
      std::fprintf(stderr, "moe-decoder-step-bench: %s\n", backend.status().ToString().c_str());
      return static_cast<LoadedModel*>(nullptr);
    }
    result->backend = std::move(*backend);
    absl::StatusOr<std::unique_ptr<moe::engine::DecoderModel>> model =
        moe::engine::DecoderModel::Load(settings().model_dir, result->backend.get());
    if (!model.ok()) {
      std::fprintf(stderr, "moe-decoder-step-bench: %s\n", model.status().ToString().c_str());
      return static_cast<LoadedModel*>(nullptr);
    }
    result->model = std::move(*model);
    return result.release();
  }();
  return loaded;
}

// Prefills `sequences` with `context` random tokens each, in passes of at most 512 tokens.
bool Prefill(moe::engine::DecoderModel& model, std::vector<moe::engine::KvSequence>& sequences,
             int64_t context, std::mt19937_64& rng) {
  const int64_t vocab = model.spec().vocab_size;
  std::vector<std::vector<int32_t>> prompts(sequences.size());
  for (auto& prompt : prompts) {
    prompt.resize(static_cast<size_t>(context));
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  }
  constexpr int64_t kPassTokens = 512;
  for (size_t first = 0; first < sequences.size();) {
    std::vector<moe::engine::DecoderChunk> chunks;
    int64_t tokens = 0;
    size_t next = first;
    for (; next < sequences.size() && (tokens == 0 || tokens + context <= kPassTokens); ++next) {
      chunks.push_back({&sequences[next], prompts[next], false});
      tokens += context;
    }
    if (!model.Step(chunks, {}).ok()) return false;
    first = next;
  }
  return true;
}

void BM_DecodeStep(benchmark::State& state) {
  LoadedModel* loaded = Model();
  if (loaded == nullptr) {
    state.SkipWithError("the model did not load (see stderr)");
    return;
  }
  moe::engine::DecoderModel& model = *loaded->model;
  const auto batch = static_cast<size_t>(state.range(0));
  const int64_t context = state.range(1);
  // Each timed pass appends one token per sequence: room for every iteration this run makes.
  const int64_t capacity = context + static_cast<int64_t>(state.max_iterations) + 1;
  if (capacity > model.spec().max_position_embeddings) {
    state.SkipWithError("context plus iterations beyond the model's max_position_embeddings");
    return;
  }
  moe::engine::KvCacheShape shape = model.kv_shape();
  const int64_t blocks_per_sequence = (capacity + shape.block_tokens - 1) / shape.block_tokens;
  // Bytes per block as KvCache lays it out: K and V of every layer, float32.
  const uint64_t block_bytes = static_cast<uint64_t>(2 * shape.num_layers * shape.num_kv_heads *
                                                     shape.block_tokens * shape.head_dim) *
                               sizeof(float);
  absl::StatusOr<std::unique_ptr<moe::engine::KvCache>> cache = moe::engine::KvCache::Create(
      shape, block_bytes * static_cast<uint64_t>(blocks_per_sequence) * batch, model.kv_storage());
  if (!cache.ok()) {
    state.SkipWithError(cache.status().ToString().c_str());
    return;
  }
  // On a device the pool moves to this case's cache (the previous case's is gone).
  if (const absl::Status prepared = model.PrepareKvCache(**cache); !prepared.ok()) {
    state.SkipWithError(prepared.ToString().c_str());
    return;
  }
  std::vector<moe::engine::KvSequence> sequences;
  sequences.reserve(batch);
  for (size_t i = 0; i < batch; ++i) {
    sequences.emplace_back(cache->get());
    if (!sequences.back().Reserve(capacity)) {
      state.SkipWithError("KV cache too small");
      return;
    }
  }
  std::mt19937_64 rng(1);
  if (!Prefill(model, sequences, context, rng)) {
    state.SkipWithError("prefill failed");
    return;
  }
  std::vector<int32_t> next(batch);
  std::vector<moe::engine::DecoderChunk> chunks(batch);
  std::vector<float> logits(batch * static_cast<size_t>(model.spec().vocab_size));
  moe::engine::DecoderStepOutputs outputs;
  outputs.logits = logits.data();
  for (auto _ : state) {
    for (size_t i = 0; i < batch; ++i) {
      next[i] = static_cast<int32_t>(rng() % static_cast<uint64_t>(model.spec().vocab_size));
      chunks[i] = {&sequences[i], std::span<const int32_t>(&next[i], 1), false};
    }
    const absl::Status status = model.Step(chunks, outputs);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(logits.data());
  }
  const double tokens = static_cast<double>(state.iterations()) * static_cast<double>(batch);
  state.counters["tokens_per_second"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
}

BENCHMARK(BM_DecodeStep)
    ->ArgNames({"batch", "context"})
    ->ArgsProduct({{1, 2, 4, 8, 16, 32, 64}, {128}})
    ->Args({32, 384})  // a longer context: attention's share grows
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Takes --model and --backend out of argv; the rest is Google Benchmark's.
bool TakeOwnFlags(int* argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    std::string* target = nullptr;
    std::string value;
    for (auto [name, field] :
         {std::pair<const char*, std::string*>{"--model", &settings().model_dir},
          {"--backend", &settings().backend}}) {
      const std::string prefix = absl::StrCat(name, "=");
      if (arg == name) {
        if (i + 1 >= *argc) {
          std::fprintf(stderr, "moe-decoder-step-bench: %s needs a value\n", name);
          return false;
        }
        target = field;
        value = argv[++i];
      } else if (arg.rfind(prefix, 0) == 0) {
        target = field;
        value = arg.substr(prefix.size());
      }
    }
    if (target != nullptr) {
      *target = value;
    } else {
      argv[kept++] = argv[i];
    }
  }
  *argc = kept;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "moe-decoder-step-bench: times one decode pass of a decoder language model at batch "
          "1 to 64.\n"
          "  --model DIR      the checkpoint (default: %s)\n"
          "  --backend NAME   where the MoE blocks run: auto, cpu or cuda (default: cpu)\n"
          "Google Benchmark's own flags follow.\n",
          settings().model_dir.c_str());
      break;
    }
  }
  if (!TakeOwnFlags(&argc, argv)) return 2;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (Model() == nullptr) return 1;
  benchmark::AddCustomContext("model", settings().model_dir);
  benchmark::AddCustomContext("backend", settings().backend);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
