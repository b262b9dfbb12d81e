// moe-bench: times the MoE layer of each backend on named model shapes (a table) or on one shape
// given by flags (one JSON object per case), against the backend's dense-GEMM, memory-copy and
// memory-read ceilings measured in the same run and against a naive per-expert loop.
//
// Exit status: 0 success (and --help), 1 a backend failed while running, 2 a usage error (bad
// flag or flag file, or an explicitly requested shape that does not fit in memory; a default run
// skips the named shapes that do not fit, with a warning).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/backend.h"
#include "bench/backend_cpu.h"
#include "bench/command_line.h"
#include "bench/report.h"
#include "bench/shapes.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#ifdef MOE_HAVE_CUDA
#include "bench/backend_cuda.h"
#endif

ABSL_FLAG(std::string, backend, "auto",
          "auto | cpu | cuda. auto picks cuda when moe-bench was built with CUDA and a device is "
          "present, else cpu.");
ABSL_FLAG(std::string, shapes, "",
          "Comma-separated named shapes to run. Unset: all of them, skipping (with a warning) any "
          "that does not fit in memory; a shape named here that does not fit is an error. Known: "
          "mixtral-8x7b (d 4096, f 14336, E 8, k 2), qwen3-30b-a3b (d 2048, f 768, E 128, k 8), "
          "olmoe-1b-7b (d 2048, f 1024, E 64, k 8). Not combinable with "
          "--hidden/--ffn/--experts/--top_k.");
ABSL_FLAG(std::optional<int64_t>, hidden, std::nullopt,
          "Custom shape: hidden size d. Give all of --hidden, --ffn, --experts, --top_k (no "
          "defaults); unset: the named shapes.");
ABSL_FLAG(std::optional<int64_t>, ffn, std::nullopt,
          "Custom shape: per-expert FFN size f (SwiGLU experts: w_in is [E, 2f, d]).");
ABSL_FLAG(std::optional<int64_t>, experts, std::nullopt, "Custom shape: number of experts E.");
ABSL_FLAG(std::optional<int64_t>, top_k, std::nullopt,
          "Custom shape: experts per token k (1 <= k <= E). Also spelled --top-k.");
ABSL_FLAG(std::string, tokens, "",
          "Comma-separated token counts T. Unset: 1,16,128,1024 on cpu (T=8192 skipped: one "
          "forward of a named shape takes 3-30 s on a 2-core CPU; pass --tokens to include it), "
          "1,16,128,1024,8192 on cuda.");
ABSL_FLAG(std::string, dtype, "",
          "Expert weight dtype: f32 | bf16 | f16. Unset: f32 on cpu, bf16 on cuda. The router "
          "is f32. The CPU layer computes in f32 (half weights are widened per call); the CUDA "
          "layer computes in bf16 or f16.");
ABSL_FLAG(bool, json, false,
          "Print one JSON object per (shape, T) on its own line instead of the table.");
ABSL_FLAG(int32_t, repeats, 5, "Timed runs per case; the median and minimum are reported.");
ABSL_FLAG(int32_t, warmup, 1, "Untimed runs before the timed ones, per case.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random weights and inputs.");
ABSL_FLAG(bool, naive, true,
          "Also time the naive per-expert loop of the same backend and report the speedup.");
ABSL_FLAG(bool, expert_timing, false,
          "Also time profiling passes of the fast path (per-expert timing on, as the server's "
          "sampled passes run) and report their median and cost over a normal pass.");
ABSL_FLAG(int64_t, gemm_ceiling_size, 0,
          "Dense GEMM ceiling: M = N = K of the GEMM timed to measure the backend's rate (f32 "
          "sgemm on cpu, the layer dtype on cuda). 0 = backend default: 2048 cpu, 8192 cuda.");
ABSL_FLAG(int64_t, copy_ceiling_mib, 0,
          "Copy ceiling: MiB copied per timed call (source and destination each this size). 0 = "
          "backend default: 512 cpu (far beyond the last-level cache), 1024 cuda.");
ABSL_FLAG(int64_t, read_ceiling_mib, 0,
          "Read ceiling: MiB read (summed, nothing written) per timed call; the ceiling of a pass "
          "that streams its weights once. 0 = backend default: 512 cpu, 1024 cuda.");

namespace moe::bench {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr char kSummary[] =
    "moe-bench: times the MoE layer against the backend's measured dense-GEMM, copy and read\n"
    "ceilings and against a naive per-expert loop.\n"
    "\n"
    "  moe-bench                        named shapes table on the best backend\n"
    "  moe-bench --backend cpu --hidden D --ffn F --experts E --top-k K --tokens T \\\n"
    "            --dtype f32|bf16|f16 --json      one JSON object per case, for scripts\n"
    "\n"
    "Exit status: 0 success (and --help); 1 a backend failed while running; 2 a usage error (bad\n"
    "flag, value or flag file; an explicitly requested shape that does not fit in memory).";

struct BenchPlan {
  std::string backend;  // "auto", "cpu" or "cuda" as asked
  std::vector<MoEShape> shapes;
  // Whether the shapes were asked for (--shapes or a custom shape): those must all fit, while a
  // default run skips the named shapes that do not.
  bool shapes_requested = false;
  std::vector<int64_t> tokens;          // empty: the backend's default list
  std::optional<kernels::DType> dtype;  // unset: the backend's default
  bool json = false;
  RunOptions run;
  CeilingOptions ceilings;
};

absl::StatusOr<std::vector<int64_t>> ParseTokens(const std::string& text) {
  std::vector<int64_t> tokens;
  if (text.empty()) return tokens;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(piece, &value) || value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tokens: '", piece, "' is not a positive integer (expected e.g. --tokens=1,16,128)"));
    }
    tokens.push_back(value);
  }
  return tokens;
}

// The kernels' own limits (dimension caps that keep sizes far from overflow), checked by the
// validation every backend shares. Sizes are positive and top_k <= experts already.
absl::Status ValidateShape(const MoEShape& shape) {
  kernels::MoELayerWeightsView view;
  view.hidden_size = shape.hidden;
  view.ffn_size = shape.ffn;
  view.num_experts = shape.experts;
  static const float kDummy = 0.0f;
  view.router_weight = &kDummy;
  view.w_in = &kDummy;
  view.w_out = &kDummy;
  kernels::RouterConfig router;
  router.top_k = static_cast<int>(shape.top_k);
  return kernels::ValidateMoELayer(view, router);
}

absl::StatusOr<BenchPlan> PlanFromFlags() {
  BenchPlan plan;
  plan.backend = absl::AsciiStrToLower(absl::GetFlag(FLAGS_backend));
  if (plan.backend != "auto" && plan.backend != "cpu" && plan.backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend: unknown backend '", plan.backend, "' (auto, cpu or cuda)"));
  }
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (!dtype_name.empty()) {
    plan.dtype = kernels::ComputeDTypeFromString(dtype_name);
    if (!plan.dtype.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dtype: unknown dtype '", dtype_name, "' (f32, bf16 or f16)"));
    }
  }

  const std::optional<int64_t> hidden = absl::GetFlag(FLAGS_hidden);
  const std::optional<int64_t> ffn = absl::GetFlag(FLAGS_ffn);
  const std::optional<int64_t> experts = absl::GetFlag(FLAGS_experts);
  const std::optional<int64_t> top_k = absl::GetFlag(FLAGS_top_k);
  const bool any_custom =
      hidden.has_value() || ffn.has_value() || experts.has_value() || top_k.has_value();
  const std::string shape_names = absl::GetFlag(FLAGS_shapes);
  plan.shapes_requested = any_custom || !shape_names.empty();
  if (any_custom) {
    if (!shape_names.empty()) {
      return absl::InvalidArgumentError(
          "--shapes and a custom shape (--hidden/--ffn/--experts/--top_k) are exclusive");
    }
    std::vector<std::string> missing;
    if (!hidden.has_value()) missing.push_back("--hidden");
    if (!ffn.has_value()) missing.push_back("--ffn");
    if (!experts.has_value()) missing.push_back("--experts");
    if (!top_k.has_value()) missing.push_back("--top_k");
    if (!missing.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("custom shape is missing ", absl::StrJoin(missing, ", ")));
    }
    if (*hidden <= 0 || *ffn <= 0 || *experts <= 0 || *top_k <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("sizes must be positive: --hidden=", *hidden,
                                                     " --ffn=", *ffn, " --experts=", *experts,
                                                     " --top_k=", *top_k));
    }
    if (*top_k > *experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("--top_k=", *top_k, " exceeds --experts=", *experts));
    }
    MoEShape shape{.name = "custom",
                   .hidden = *hidden,
                   .ffn = *ffn,
                   .experts = *experts,
                   .top_k = static_cast<int>(*top_k),
                   .renormalize = true};
    if (absl::Status status = ValidateShape(shape); !status.ok()) return status;
    plan.shapes.push_back(shape);
  } else if (shape_names.empty()) {
    plan.shapes = NamedShapes();
  } else {
    for (absl::string_view name : absl::StrSplit(shape_names, ',')) {
      std::optional<MoEShape> shape = FindNamedShape(name);
      if (!shape.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--shapes: unknown shape '", name, "' (known: ", NamedShapeList(), ")"));
      }
      plan.shapes.push_back(*shape);
    }
  }

  absl::StatusOr<std::vector<int64_t>> tokens = ParseTokens(absl::GetFlag(FLAGS_tokens));
  if (!tokens.ok()) return tokens.status();
  plan.tokens = *tokens;
  constexpr int64_t kMaxTokens = int64_t{1} << 26;
  for (int64_t t : plan.tokens) {
    if (t > kMaxTokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens: ", t, " exceeds the kernels' limit of ", kMaxTokens));
    }
  }

  plan.json = absl::GetFlag(FLAGS_json);
  plan.run.repeats = absl::GetFlag(FLAGS_repeats);
  plan.run.warmup = absl::GetFlag(FLAGS_warmup);
  plan.run.naive = absl::GetFlag(FLAGS_naive);
  plan.run.expert_timing = absl::GetFlag(FLAGS_expert_timing);
  plan.run.seed = absl::GetFlag(FLAGS_seed);
  if (plan.run.repeats < 1 || plan.run.repeats > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--repeats=", plan.run.repeats, " outside [1, 100000]"));
  }
  if (plan.run.warmup < 0 || plan.run.warmup > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--warmup=", plan.run.warmup, " outside [0, 100000]"));
  }
  plan.ceilings.gemm_size = absl::GetFlag(FLAGS_gemm_ceiling_size);
  if (plan.ceilings.gemm_size != 0 &&
      (plan.ceilings.gemm_size < 64 || plan.ceilings.gemm_size > 32768)) {
    return absl::InvalidArgumentError(absl::StrCat("--gemm_ceiling_size=", plan.ceilings.gemm_size,
                                                   " outside [64, 32768] (0: default)"));
  }
  const int64_t copy_mib = absl::GetFlag(FLAGS_copy_ceiling_mib);
  if (copy_mib < 0 || copy_mib > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--copy_ceiling_mib=", copy_mib, " outside [1, 1048576] (0: default)"));
  }
  plan.ceilings.copy_bytes = copy_mib << 20;
  const int64_t read_mib = absl::GetFlag(FLAGS_read_ceiling_mib);
  if (read_mib < 0 || read_mib > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--read_ceiling_mib=", read_mib, " outside [1, 1048576] (0: default)"));
  }
  plan.ceilings.read_bytes = read_mib << 20;
  plan.ceilings.warmup = 1;
  plan.ceilings.repeats = std::max(plan.run.repeats, 5);
  return plan;
}

// The backend asked for; auto prefers CUDA when built and a device is present.
absl::StatusOr<std::unique_ptr<BenchBackend>> MakeBackend(const std::string& name) {
#ifdef MOE_HAVE_CUDA
  if (name == "cuda" || name == "auto") {
    absl::StatusOr<std::unique_ptr<BenchBackend>> cuda = MakeCudaBackend();
    if (cuda.ok()) return cuda;
    if (name == "cuda") {
      return absl::FailedPreconditionError(
          absl::StrCat("--backend=cuda: ", cuda.status().message()));
    }
    std::cerr << "moe-bench: using the cpu backend: " << cuda.status().message() << "\n";
  }
#else
  if (name == "cuda") {
    return absl::FailedPreconditionError(
        "--backend=cuda: this moe-bench was built without CUDA (configure with -DMOE_CUDA=ON)");
  }
#endif
  return MakeCpuBackend();
}

std::vector<int64_t> DefaultTokens(const BenchBackend& backend) {
  if (backend.Name() == "cpu") {
    return std::vector<int64_t>(std::begin(kDefaultCpuTokens), std::end(kDefaultCpuTokens));
  }
  return std::vector<int64_t>(std::begin(kSweepTokens), std::end(kSweepTokens));
}

int Run(BenchPlan plan) {
  absl::StatusOr<std::unique_ptr<BenchBackend>> made = MakeBackend(plan.backend);
  if (!made.ok()) {
    std::cerr << "moe-bench: " << made.status().message() << "\n";
    return kExitUsage;
  }
  BenchBackend& backend = **made;
  if (plan.tokens.empty()) plan.tokens = DefaultTokens(backend);
  const kernels::DType dtype =
      plan.dtype.value_or(backend.Name() == "cpu" ? kernels::DType::kF32 : kernels::DType::kBF16);
  plan.ceilings.dtype = dtype;
  const int64_t max_tokens = *std::max_element(plan.tokens.begin(), plan.tokens.end());
  std::vector<MoEShape> shapes;
  for (const MoEShape& shape : plan.shapes) {
    absl::Status fits = backend.CheckFits(shape, dtype, max_tokens, plan.ceilings);
    if (fits.ok()) {
      shapes.push_back(shape);
    } else if (plan.shapes_requested || fits.code() != absl::StatusCode::kResourceExhausted) {
      std::cerr << "moe-bench: " << fits.message() << "\n";
      return kExitUsage;
    } else {
      std::cerr << "moe-bench: warning: skipping " << shape.name << ": " << fits.message() << "\n";
    }
  }
  if (shapes.empty()) {
    std::cerr << "moe-bench: no named shape fits in the available memory\n";
    return kExitUsage;
  }
  plan.shapes = std::move(shapes);

  const std::optional<double> load = HostLoadAverage();
  absl::StatusOr<Ceilings> before = backend.MeasureCeilings(plan.ceilings);
  if (!before.ok()) {
    std::cerr << "moe-bench: measuring the ceilings failed: " << before.status() << "\n";
    return kExitFailure;
  }
  const std::string device = backend.Description();
  std::vector<CaseReport> reports;
  for (const MoEShape& shape : plan.shapes) {
    if (absl::Status status = backend.PrepareLayer(shape, dtype, plan.run.seed); !status.ok()) {
      std::cerr << "moe-bench: " << shape.name << ": creating the layer failed: " << status << "\n";
      return kExitFailure;
    }
    for (int64_t tokens : plan.tokens) {
      if (!plan.json) std::cerr << "moe-bench: " << shape.name << " T=" << tokens << std::endl;
      RunOptions run = plan.run;
      run.seed = plan.run.seed ^ (static_cast<uint64_t>(tokens) * 0x9e3779b97f4a7c15ull);
      absl::StatusOr<CaseResult> result = backend.Run(tokens, run);
      if (!result.ok()) {
        std::cerr << "moe-bench: " << shape.name << " T=" << tokens << ": " << result.status()
                  << "\n";
        return kExitFailure;
      }
      CaseReport report;
      report.backend = backend.Name();
      report.device = device;
      report.shape = shape;
      report.tokens = tokens;
      report.dtype = dtype;
      report.run = plan.run;
      report.host_load_average = load;
      report.result = *std::move(result);
      reports.push_back(std::move(report));
    }
  }
  backend.ReleaseLayer();
  // Measured again after the cases: on a shared host the first measurement may have had
  // company; the higher of the two is the ceiling.
  absl::StatusOr<Ceilings> after = backend.MeasureCeilings(plan.ceilings);
  if (!after.ok()) {
    std::cerr << "moe-bench: measuring the ceilings failed: " << after.status() << "\n";
    return kExitFailure;
  }
  const Ceilings ceilings = BestCeilings(*before, *after);
  if (CeilingSpread(ceilings) > kNoisyCeilingSpread) {
    std::cerr << "moe-bench: warning: the ceilings moved by "
              << static_cast<int>(100.0 * CeilingSpread(ceilings))
              << "% during the run; other work shared the machine\n";
  }
  if (!plan.json) {
    std::cout << TableHeader(backend.Name(), device, ceilings, plan.run, load) << "\n"
              << TableColumns() << "\n";
  }
  for (CaseReport& report : reports) {
    report.ceilings = ceilings;
    Derive(report);
    std::cout << (plan.json ? ToJson(report).dump() : TableRow(report)) << "\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) {
  if (moe::bench::WantsHelp(argc, argv)) {
    std::cout << moe::bench::Usage(moe::bench::kSummary, "moe_bench_main.cc");
    return 0;
  }
  absl::StatusOr<moe::bench::CheckedCommandLine> line =
      moe::bench::CheckedCommandLine::Check(argc, argv);
  if (!line.ok()) {
    std::cerr << "moe-bench: " << line.status().message() << "\n";
    return moe::bench::kExitUsage;
  }
  std::vector<char*> args = line->Argv();
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  absl::StatusOr<moe::bench::BenchPlan> plan = moe::bench::PlanFromFlags();
  if (!plan.ok()) {
    std::cerr << "moe-bench: " << plan.status().message() << "\n";
    return moe::bench::kExitUsage;
  }
  return moe::bench::Run(*std::move(plan));
}
