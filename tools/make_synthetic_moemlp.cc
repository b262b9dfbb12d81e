// moe-make-synthetic: writes a MoEMLP model directory (config.json + model.safetensors, the
// layout of docs/moe_mlp_format.md), or with --kind=mixtral a Mixtral-shaped decoder checkpoint
// (tools/synthetic_mixtral.h), with random weights of any size, for benchmarks and tests.
// Weights are drawn from N(0, 1/fan_in) so activations keep their scale through the blocks.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "server/model/model_config.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_mlp_weights.h"
#include "server/model/safetensors_writer.h"
#include "tools/synthetic_mixtral.h"

ABSL_FLAG(std::string, kind, "moe_mlp",
          "What to write: moe_mlp (a MoEMLP network) or mixtral (a decoder language model)");
ABSL_FLAG(int64_t, heads, 16, "mixtral: attention heads");
ABSL_FLAG(int64_t, kv_heads, 4, "mixtral: key/value heads");
ABSL_FLAG(int64_t, vocab, 32000, "mixtral: vocabulary size");
ABSL_FLAG(int64_t, context, 4096, "mixtral: max_position_embeddings");
ABSL_FLAG(std::string, out, "",
          "Directory to write config.json and model.safetensors to (created)");
ABSL_FLAG(int64_t, input_dim, 1024, "Features per input row");
ABSL_FLAG(int64_t, hidden, 1024, "Hidden size d");
ABSL_FLAG(int64_t, ffn, 2816, "Expert FFN width f");
ABSL_FLAG(int64_t, experts, 8, "Experts per block");
ABSL_FLAG(int64_t, top_k, 2, "Experts per row");
ABSL_FLAG(int64_t, blocks, 2, "MoE blocks (mixtral: decoder layers)");
ABSL_FLAG(int64_t, output_dim, 1024, "Values per output row");
ABSL_FLAG(std::string, activation, "swiglu", "Expert activation: relu, gelu or swiglu");
ABSL_FLAG(std::string, router, "softmax", "Router scoring: softmax or sigmoid");
ABSL_FLAG(bool, normalize_top_k, true, "Renormalise the k selected weights to sum to 1");
ABSL_FLAG(std::string, dtype, "f32", "Expert weight dtype: f32, bf16 or f16");
ABSL_FLAG(uint64_t, seed, 1, "Random seed (the same seed and sizes give the same file)");
ABSL_FLAG(bool, force, false, "Overwrite an existing config.json / model.safetensors in --out");

namespace moe::tools {
namespace {

namespace fs = std::filesystem;
using kernels::DType;

constexpr char kUsage[] =
    "moe-make-synthetic: writes a MoEMLP model directory (config.json + model.safetensors, see\n"
    "docs/moe_mlp_format.md) with random weights, for benchmarks and tests.\n"
    "\n"
    "  moe-make-synthetic --out DIR [--kind moe_mlp|mixtral] [--input-dim N] [--hidden N] [--ffn "
    "N] [--experts N]\n"
    "                     [--top-k N] [--blocks N] [--output-dim N] [--activation "
    "relu|gelu|swiglu]\n"
    "                     [--router softmax|sigmoid] [--[no]normalize-top-k] [--dtype "
    "f32|bf16|f16]\n"
    "                     [--seed N] [--force]\n"
    "\n"
    "Flags (dashes and underscores are interchangeable):\n"
    "  --out=DIR             directory to write (created); required\n"
    "  --kind=NAME           moe_mlp (default) or mixtral: a Mixtral-shaped decoder language\n"
    "                        model (Hugging Face layout) that moe-server generates from; it\n"
    "                        uses --hidden, --ffn, --experts, --top-k, --blocks (layers),\n"
    "                        --dtype, --seed and --heads, --kv-heads, --vocab, --context\n"
    "  --heads=N, --kv-heads=N, --vocab=N, --context=N   mixtral only (16, 4, 32000, 4096)\n"
    "  --input-dim=N         features per input row (default 1024)\n"
    "  --hidden=N            hidden size d (default 1024)\n"
    "  --ffn=N               expert FFN width f (default 2816)\n"
    "  --experts=N           experts per block (default 8)\n"
    "  --top-k=N             experts per row (default 2)\n"
    "  --blocks=N            MoE blocks (default 2)\n"
    "  --output-dim=N        values per output row (default 1024)\n"
    "  --activation=NAME     relu, gelu or swiglu (default swiglu)\n"
    "  --router=NAME         softmax or sigmoid router scoring (default softmax)\n"
    "  --[no]normalize-top-k renormalise the selected experts' weights (default true)\n"
    "  --dtype=NAME          expert weight dtype f32, bf16 or f16 (default f32)\n"
    "  --seed=N              random seed (default 1)\n"
    "  --force               overwrite existing files in --out\n"
    "\n"
    "Exit status: 0 written (or --help), 1 anything else (the message says what).\n";

constexpr int kExitFailure = 1;

// absl flag names are identifiers; accept --top-k as --top_k.
std::vector<std::string> NormaliseArgs(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const size_t start = arg.find_first_not_of('-');
    const size_t end = std::min(arg.find('='), arg.size());
    if (start == std::string::npos) continue;
    std::replace(arg.begin() + static_cast<std::ptrdiff_t>(start),
                 arg.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
  }
  return args;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") return false;
    for (const char* help : {"-h", "-help", "--help", "--helpfull", "--helpshort"}) {
      if (args[i] == help) return true;
    }
  }
  return false;
}

absl::StatusOr<model::MoEMLPConfig> ConfigFromFlags() {
  model::MoEMLPConfig config;
  config.input_dim = absl::GetFlag(FLAGS_input_dim);
  config.hidden_size = absl::GetFlag(FLAGS_hidden);
  config.output_dim = absl::GetFlag(FLAGS_output_dim);
  config.num_blocks = absl::GetFlag(FLAGS_blocks);
  config.num_experts = absl::GetFlag(FLAGS_experts);
  config.expert_ffn_dim = absl::GetFlag(FLAGS_ffn);
  const int64_t top_k = absl::GetFlag(FLAGS_top_k);
  if (top_k < 1 || top_k > config.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top-k=", top_k, " must be in [1, --experts=", config.num_experts, "]"));
  }
  config.top_k = static_cast<int>(top_k);
  const std::string activation = absl::AsciiStrToLower(absl::GetFlag(FLAGS_activation));
  if (activation == "relu") {
    config.activation = kernels::Activation::kReLU;
  } else if (activation == "gelu") {
    config.activation = kernels::Activation::kGELU;
  } else if (activation == "swiglu") {
    config.activation = kernels::Activation::kSwiGLU;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--activation='", activation, "': expected relu, gelu or swiglu"));
  }
  const std::string router = absl::AsciiStrToLower(absl::GetFlag(FLAGS_router));
  if (router == "softmax") {
    config.router_scoring = kernels::ScoringFunc::kSoftmax;
  } else if (router == "sigmoid") {
    config.router_scoring = kernels::ScoringFunc::kSigmoid;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--router='", router, "': expected softmax or sigmoid"));
  }
  config.normalize_top_k = absl::GetFlag(FLAGS_normalize_top_k);
  config.description =
      absl::StrCat("synthetic MoEMLP with random weights (moe-make-synthetic, seed ",
                   absl::GetFlag(FLAGS_seed), ")");
  // The parser holds the bounds and cross-checks; a config it refuses is not written.
  const std::string text = model::MoEMLPConfigToJson(config);
  MOE_ASSIGN_OR_RETURN(model::MoEMLPConfig checked, model::ParseMoEMLPConfig(text, "flags"));
  return checked;
}

// Values of one tensor: N(0, scale^2), or `offset` + N(0, scale^2).
std::vector<float> Normal(std::mt19937_64& rng, int64_t count, double scale, double offset = 0) {
  std::normal_distribution<float> dist(static_cast<float>(offset), static_cast<float>(scale));
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = dist(rng);
  return values;
}

std::span<const std::byte> Bytes(const std::vector<float>& values) {
  return std::as_bytes(std::span<const float>(values));
}

// Writes the tensors in ExpectedMoEMLPTensorNames order, generating each just before writing.
absl::Status WriteWeights(const std::string& path, const model::MoEMLPConfig& c, DType dtype,
                          uint64_t seed) {
  const int64_t d = c.hidden_size;
  const int64_t e = c.num_experts;
  const int64_t f = c.expert_ffn_dim;
  const int64_t in_rows = c.expert_in_rows();
  auto shape_of = [&](const std::string& name) -> std::vector<int64_t> {
    if (name == "input_proj.weight") return {d, c.input_dim};
    if (name == "output_proj.weight") return {c.output_dim, d};
    if (name == "output_proj.bias") return {c.output_dim};
    if (name.ends_with("router.weight")) return {e, d};
    if (name.ends_with("moe.w_in")) return {e, in_rows, d};
    if (name.ends_with("moe.b_in")) return {e, in_rows};
    if (name.ends_with("moe.w_out")) return {e, d, f};
    if (name.ends_with("moe.b_out")) return {e, d};
    return {d};  // input_proj.bias and the norms
  };
  const std::vector<std::string> names = model::ExpectedMoEMLPTensorNames(c);
  std::vector<model::TensorSpec> specs;
  for (const std::string& name : names) {
    const bool expert = name.ends_with("moe.w_in") || name.ends_with("moe.w_out");
    specs.push_back({name, expert ? dtype : DType::kF32, shape_of(name)});
  }
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsWriter> writer,
                       model::SafetensorsWriter::Create(path, specs,
                                                        {{"format", "moe_mlp"},
                                                         {"generator", "moe-make-synthetic"},
                                                         {"seed", absl::StrCat(seed)}}));
  std::mt19937_64 rng(seed);
  for (const model::TensorSpec& spec : specs) {
    const std::string& name = spec.name;
    int64_t count = 1;
    for (const int64_t dim : spec.shape) count *= dim;
    std::vector<float> values;
    if (name.ends_with("norm.weight")) {
      values = Normal(rng, count, 0.05, 1.0);
    } else if (name.ends_with("bias") || name.ends_with("b_in") || name.ends_with("b_out")) {
      values = Normal(rng, count, 0.02);
    } else {
      // Fan-in is the last dimension of every weight ([out, in] / [E, out, in]).
      values = Normal(rng, count, 1.0 / std::sqrt(static_cast<double>(spec.shape.back())));
    }
    if (spec.dtype == DType::kF32) {
      MOE_RETURN_IF_ERROR(writer->Append(Bytes(values)));
      continue;
    }
    std::vector<uint16_t> half(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      half[i] = spec.dtype == DType::kBF16 ? kernels::FloatToBF16(values[i])
                                           : kernels::FloatToHalf(values[i]);
    }
    MOE_RETURN_IF_ERROR(writer->Append(std::as_bytes(std::span<const uint16_t>(half))));
  }
  return writer->Finish();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  const std::string temp = path + ".partial";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temp));
  }
  std::error_code error;
  fs::rename(temp, path, error);
  if (error)
    return absl::InternalError(absl::StrCat("cannot rename ", temp, ": ", error.message()));
  return absl::OkStatus();
}

// --kind=mixtral: the decoder checkpoint, checked by the loader's own config parser.
int WriteMixtral(const fs::path& dir, DType dtype, uint64_t seed) {
  SyntheticMixtralShape shape;
  shape.vocab_size = absl::GetFlag(FLAGS_vocab);
  shape.hidden_size = absl::GetFlag(FLAGS_hidden);
  shape.intermediate_size = absl::GetFlag(FLAGS_ffn);
  shape.num_layers = absl::GetFlag(FLAGS_blocks);
  shape.num_heads = absl::GetFlag(FLAGS_heads);
  shape.num_kv_heads = absl::GetFlag(FLAGS_kv_heads);
  shape.num_experts = absl::GetFlag(FLAGS_experts);
  shape.top_k = absl::GetFlag(FLAGS_top_k);
  shape.max_position_embeddings = absl::GetFlag(FLAGS_context);
  shape.dtype = dtype;
  shape.seed = seed;
  const std::string config_path = (dir / "config.json").string();
  const std::string text = SyntheticMixtralConfigJson(shape);
  if (absl::StatusOr<model::ModelConfig> parsed = model::ParseModelConfig(text, "flags");
      !parsed.ok()) {
    std::cerr << "moe-make-synthetic: " << parsed.status().message() << "\n";
    return kExitFailure;
  }
  const std::string weights_path = (dir / "model.safetensors").string();
  absl::Status status = WriteSyntheticMixtralWeights(weights_path, shape);
  if (status.ok()) status = WriteText(config_path, text);
  if (!status.ok()) {
    std::cerr << "moe-make-synthetic: " << status.message() << "\n";
    return kExitFailure;
  }
  std::error_code error;
  std::cout << "wrote " << dir.string() << ": Mixtral-shaped decoder, " << shape.num_layers
            << " layers of " << shape.num_experts << " experts (top-" << shape.top_k
            << ", d=" << shape.hidden_size << ", f=" << shape.intermediate_size
            << ", vocab=" << shape.vocab_size << "), " << fs::file_size(weights_path, error)
            << " bytes of weights\n";
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args = NormaliseArgs(argc, argv);
  if (WantsHelp(args)) {
    std::cout << kUsage;
    return 0;
  }
  std::vector<char*> pointers;
  for (std::string& arg : args) pointers.push_back(arg.data());
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(pointers.size()), pointers.data());
  if (positional.size() > 1) {
    std::cerr << "moe-make-synthetic: unexpected argument '" << positional[1]
              << "'; it takes only flags (--help)\n";
    return kExitFailure;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cerr << "moe-make-synthetic: --out=DIR is required (--help)\n";
    return kExitFailure;
  }
  const std::string kind = absl::GetFlag(FLAGS_kind);
  if (kind != "moe_mlp" && kind != "mixtral") {
    std::cerr << "moe-make-synthetic: --kind='" << kind << "': expected moe_mlp or mixtral\n";
    return kExitFailure;
  }
  absl::StatusOr<model::MoEMLPConfig> config = ConfigFromFlags();
  if (!config.ok()) {
    std::cerr << "moe-make-synthetic: " << config.status().message() << "\n";
    return kExitFailure;
  }
  const std::optional<DType> dtype = kernels::ComputeDTypeFromString(absl::GetFlag(FLAGS_dtype));
  if (!dtype.has_value()) {
    std::cerr << "moe-make-synthetic: --dtype='" << absl::GetFlag(FLAGS_dtype)
              << "': expected f32, bf16 or f16\n";
    return kExitFailure;
  }

  const fs::path dir(out);
  const std::string config_path = (dir / "config.json").string();
  const std::string weights_path = (dir / "model.safetensors").string();
  std::error_code error;
  if (!absl::GetFlag(FLAGS_force) &&
      (fs::exists(config_path, error) || fs::exists(weights_path, error))) {
    std::cerr << "moe-make-synthetic: " << out
              << " already holds a model; pass --force to overwrite it\n";
    return kExitFailure;
  }
  fs::create_directories(dir, error);
  if (error) {
    std::cerr << "moe-make-synthetic: cannot create " << out << ": " << error.message() << "\n";
    return kExitFailure;
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  if (kind == "mixtral") return WriteMixtral(dir, *dtype, seed);
  if (absl::Status status = WriteWeights(weights_path, *config, *dtype, seed); !status.ok()) {
    std::cerr << "moe-make-synthetic: " << status.message() << "\n";
    return kExitFailure;
  }
  if (absl::Status status = WriteText(config_path, model::MoEMLPConfigToJson(*config));
      !status.ok()) {
    std::cerr << "moe-make-synthetic: " << status.message() << "\n";
    return kExitFailure;
  }
  std::cout << "wrote " << out << ": " << config->num_blocks << " blocks of " << config->num_experts
            << " " << model::MoEMLPActivationName(config->activation) << " experts (top-"
            << config->top_k << ", d=" << config->hidden_size << ", f=" << config->expert_ffn_dim
            << "), " << fs::file_size(weights_path, error) << " bytes of weights\n";
  return 0;
}

}  // namespace
}  // namespace moe::tools

int main(int argc, char** argv) { return moe::tools::Main(argc, argv); }
