// libFuzzer target: KServe ModelInferRequests through ParseInferRequest against the built-in
// model ("digits": input 'input' [rows, 64], output 'logits' [rows, 10], 2 MoE blocks of 8
// experts, top-2), and every accepted request through the model's forward pass on the CPU.
//
// The first byte picks how the rest becomes a request:
//   even: the bytes are a serialized ModelInferRequest (ParseFromArray), as gRPC would hand it;
//   odd:  the bytes drive a builder (BuildRequest below) that picks fields, datatypes, shapes,
//         parameters and contents from short lists of valid and almost-valid values, so that most
//         inputs get past the protobuf layer and the name checks into the shape, size, contents
//         and finiteness checks.
//
// Refusals must be INVALID_ARGUMENT (NOT_FOUND for an unknown model version) with a bounded,
// printable message. An accepted request must have decoded exactly what was sent, finite values
// only, rows within the limit; its forward pass must succeed, write only finite outputs (for
// inputs below the float32 overflow bound, see InputBound), route every row to top_k distinct
// experts with weights that sum to 1, and give bit-identical outputs when run again.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "moe/kernels/dtype.h"
#include "server/api/infer_request_parser.h"
#include "server/engine/model_loader.h"
#include "server/engine/moe_backend.h"
#include "server/engine/moe_mlp_model.h"
#include "tests/fuzz/fuzz_check.h"

namespace moe::fuzz {
namespace {

using inference::ModelInferRequest;

// Rows a request may carry (the server's --max-batch-tokens); small so each run stays cheap.
constexpr int64_t kMaxRows = 8;

struct Served {
  std::unique_ptr<engine::MoEBackend> backend;
  std::unique_ptr<engine::ServableModel> model;
  // Largest input magnitude whose forward pass cannot overflow float32 (InputBound below).
  double finite_input_bound = 0;
};

// The parser accepts any finite value, but float32 has a range: the input projection
// (x W^T + b, in float32) overflows to infinity once |x| * ||W row||_1 nears FLT_MAX, and the
// LayerNorm after it turns that into NaN (the built-in model's widest row has ||W row||_1 of
// about 7.3, so from |x| of about 4.6e37). Below a quarter of that nothing overflows: each partial
// sum of the projection is at most |x| * ||W row||_1 + |b|, the LayerNorms compute in double, the
// MoE layers and the output projection see normalised values, and the residual adds to the
// projection are small.
double InputBound(const model::LinearWeights& input_proj) {
  double widest_row = 0;
  for (int64_t o = 0; o < input_proj.out_features; ++o) {
    double l1 = 0;
    for (int64_t i = 0; i < input_proj.in_features; ++i) {
      l1 += std::abs(input_proj.weight[o * input_proj.in_features + i]);
    }
    widest_row = std::max(widest_row, l1);
  }
  double largest_bias = 0;
  for (const float b : input_proj.bias) largest_bias = std::max<double>(largest_bias, std::abs(b));
  return (std::numeric_limits<float>::max() / 4.0 - largest_bias) / std::max(widest_row, 1e-30);
}

Served& BuiltinModel() {
  static Served* served = [] {
    auto* s = new Served;
    s->backend = engine::CreateCpuBackend();
    absl::StatusOr<std::unique_ptr<engine::ServableModel>> model =
        engine::LoadBuiltinModel(*s->backend);
    if (!model.ok()) {
      Fail(absl::StrCat("cannot load the built-in model: ", model.status().ToString()), __FILE__,
           __LINE__);
    }
    s->model = std::move(model).value();
    const auto* mlp = dynamic_cast<const engine::MoEMLPModel*>(s->model.get());
    if (mlp == nullptr) Fail("the built-in model is not a MoEMLP model", __FILE__, __LINE__);
    s->finite_input_bound = InputBound(mlp->weights().input_proj);
    if (std::getenv("MOE_FUZZ_VERBOSE") != nullptr) {
      std::fprintf(stderr, "outputs must be finite for inputs up to %g\n", s->finite_input_bound);
    }
    return s;
  }();
  return *served;
}

// Reads the fuzzer's bytes from the front; past the end every read gives zeros.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // A choice among `n` (1..256) alternatives.
  int Pick(int n) { return Byte() % n; }
  uint64_t U64() {
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value |= uint64_t{Byte()} << (8 * i);
    return value;
  }
  uint32_t U32() {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) value |= uint32_t{Byte()} << (8 * i);
    return value;
  }
  // Up to `max_len` bytes, the length read first.
  std::string String(size_t max_len) {
    const size_t len = Byte() % (max_len + 1);
    std::string out;
    for (size_t i = 0; i < len; ++i) out.push_back(static_cast<char>(Byte()));
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int64_t InterestingInt64(ByteReader& in) {
  switch (in.Pick(8)) {
    case 0:
      return 0;
    case 1:
      return -1;
    case 2:
      return std::numeric_limits<int64_t>::max();
    case 3:
      return std::numeric_limits<int64_t>::min();
    case 4:
      return static_cast<int64_t>(in.U64());
    default:
      return in.Byte();
  }
}

void FillParameter(ByteReader& in, inference::InferParameter& param) {
  switch (in.Pick(6)) {
    case 0:
      break;  // no choice set
    case 1:
      param.set_bool_param(in.Byte() & 1);
      break;
    case 2:
      param.set_int64_param(InterestingInt64(in));
      break;
    case 3:
      param.set_uint64_param(in.Pick(2) == 0 ? in.U64() : in.Byte());
      break;
    case 4:
      param.set_string_param(in.String(8));
      break;
    default:
      param.set_double_param(static_cast<double>(InterestingInt64(in)) / 3.0);
      break;
  }
}

// How the builder fills element values: the hardest to reach are NaN and infinities at a
// chosen place, which raw bytes give directly.
float NextValue(ByteReader& in, int style, float constant) {
  switch (style) {
    case 0: {  // raw float32 bits
      const uint32_t bits = in.U32();
      float value;
      std::memcpy(&value, &bits, sizeof(value));
      return value;
    }
    case 1:  // small numbers, the usual kind of input
      return static_cast<float>(static_cast<int8_t>(in.Byte())) / 16.0f;
    default:
      return constant;
  }
}

// Builds a request from the bytes (see the file comment).
ModelInferRequest BuildRequest(ByteReader& in, const engine::ModelDescription& model) {
  ModelInferRequest request;
  request.set_model_name(model.name);
  switch (in.Pick(4)) {
    case 1:
      request.set_model_version("1");
      break;
    case 2:
      request.set_model_version(in.String(12));
      break;
    default:
      break;
  }
  if (in.Pick(4) == 0) request.set_id(in.String(16));

  for (int n = in.Pick(4); n > 0; --n) {
    static const char* const kKeys[] = {api::kRoutingParameter, api::kTimeoutParameter,
                                        api::kPriorityParameter, "client_tag"};
    const int which = in.Pick(5);
    const std::string key = which < 4 ? kKeys[which] : in.String(8);
    FillParameter(in, (*request.mutable_parameters())[key]);
  }

  for (int n = in.Pick(5); n > 0; --n) {
    auto* output = request.add_outputs();
    switch (in.Pick(5)) {
      case 0:
        output->set_name(model.output_name);
        break;
      case 1:
        output->set_name(api::kRoutingIdsOutput);
        break;
      case 2:
        output->set_name(api::kRoutingWeightsOutput);
        break;
      case 3:
        output->set_name(in.String(12));
        break;
      default:
        break;  // no name
    }
    if (in.Pick(8) == 0) FillParameter(in, (*output->mutable_parameters())["classification"]);
  }

  const int pick_inputs = in.Pick(8);
  const int num_inputs = pick_inputs == 0 ? 0 : pick_inputs == 7 ? 2 : 1;
  for (int n = 0; n < num_inputs; ++n) {
    auto* input = request.add_inputs();
    const int name_choice = in.Pick(8);
    input->set_name(name_choice == 0 ? in.String(12) : name_choice == 1 ? "" : model.input_name);
    static const char* const kTypes[] = {"FP32", "FP32", "FP32", "FP16", "FP16", "BF16", "INT32"};
    const int type_choice = in.Pick(8);
    input->set_datatype(type_choice < 7 ? kTypes[type_choice] : in.String(6));

    const int rank_choice = in.Pick(8);
    const int rank = rank_choice == 0 ? 0 : rank_choice == 1 ? 1 : rank_choice == 7 ? 3 : 2;
    int64_t elements = 1;
    for (int d = 0; d < rank; ++d) {
      int64_t dim = 0;
      const int dim_choice = in.Pick(16);
      if (dim_choice == 0) {
        dim = InterestingInt64(in);
      } else if (dim_choice == 1) {
        dim = kMaxRows + 1;
      } else if (d == 1 && dim_choice > 3) {
        dim = model.input_width;
      } else {
        dim = 1 + in.Byte() % kMaxRows;
      }
      input->add_shape(dim);
      elements = dim < 0 || dim > 4096 || elements * dim > 4096 ? 4096 : elements * dim;
    }

    // Where the values go: typed fp32_contents, raw_input_contents, both or neither; usually
    // exactly as many as the shape needs, sometimes one more or one fewer.
    const int where = in.Pick(8);
    const bool typed = where == 1 || (where >= 2 && where <= 4);
    const bool raw = where == 1 || where >= 5;
    const int count_choice = in.Pick(16);
    const int64_t count = std::max<int64_t>(0, elements + (count_choice == 0   ? -1
                                                           : count_choice == 1 ? 1
                                                                               : 0));
    const int style = in.Pick(4);
    float constant = 0.0f;
    if (style >= 2) constant = NextValue(in, 0, 0.0f);
    if (typed) {
      auto* contents = input->mutable_contents();
      for (int64_t i = 0; i < count; ++i)
        contents->add_fp32_contents(NextValue(in, style, constant));
      switch (in.Pick(16)) {
        case 0:
          contents->add_int_contents(1);
          break;
        case 1:
          contents->add_bytes_contents("x");
          break;
        case 2:
          contents->add_fp64_contents(0.5);
          break;
        default:
          break;
      }
    }
    if (raw) {
      std::string bytes;
      const std::string type = input->datatype();
      const bool half = type == "FP16" || type == "BF16";
      for (int64_t i = 0; i < count; ++i) {
        const float value = NextValue(in, style, constant);
        if (half) {
          uint16_t bits = 0;
          if (style == 0) {
            std::memcpy(&bits, &value, sizeof(bits));  // raw half bits, NaN/inf included
          } else {
            bits = type == "FP16" ? kernels::FloatToHalf(value) : kernels::FloatToBF16(value);
          }
          bytes.append(reinterpret_cast<const char*>(&bits), sizeof(bits));
        } else {
          bytes.append(reinterpret_cast<const char*>(&value), sizeof(value));
        }
      }
      if (in.Pick(16) == 0) bytes.push_back('\0');  // a byte past the last element
      request.add_raw_input_contents(std::move(bytes));
    }
  }
  if (in.Pick(16) == 0) request.add_raw_input_contents("");
  return request;
}

// What the parser promises about a request it accepted.
void CheckAccepted(const ModelInferRequest& request, const api::ParsedInferRequest& parsed,
                   const engine::ModelDescription& model) {
  MOE_FUZZ_CHECK(request.model_version().empty() || request.model_version() == "1");
  MOE_FUZZ_CHECK(request.inputs_size() == 1 && request.inputs(0).name() == model.input_name);
  const auto& input = request.inputs(0);
  MOE_FUZZ_CHECK(input.shape_size() == 2 && input.shape(1) == model.input_width);
  MOE_FUZZ_CHECK(parsed.rows == input.shape(0) && parsed.rows >= 1 && parsed.rows <= kMaxRows,
                 "rows ", parsed.rows);
  const size_t count = static_cast<size_t>(parsed.rows * model.input_width);
  MOE_FUZZ_CHECK(parsed.input.size() == count);
  MOE_FUZZ_CHECK(parsed.want_output || parsed.want_routing());
  MOE_FUZZ_CHECK(parsed.raw_output == !request.raw_input_contents().empty());
  MOE_FUZZ_CHECK(parsed.priority >= 0);
  for (const float v : parsed.input) MOE_FUZZ_CHECK(std::isfinite(v), "accepted input ", v);

  // Decoded exactly: bit for bit what was sent, widened from half types.
  const std::string& type = input.datatype();
  if (parsed.raw_output) {
    MOE_FUZZ_CHECK(request.raw_input_contents_size() == 1 && !input.has_contents());
    const std::string& raw = request.raw_input_contents(0);
    if (type == "FP32") {
      MOE_FUZZ_CHECK(raw.size() == count * 4 &&
                     std::memcmp(raw.data(), parsed.input.data(), raw.size()) == 0);
    } else {
      MOE_FUZZ_CHECK(type == "FP16" || type == "BF16", "accepted datatype '", type, "'");
      MOE_FUZZ_CHECK(raw.size() == count * 2);
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, raw.data() + 2 * i, sizeof(bits));
        const float expected =
            type == "FP16" ? kernels::HalfToFloat(bits) : kernels::BF16ToFloat(bits);
        MOE_FUZZ_CHECK(std::memcmp(&expected, &parsed.input[i], sizeof(float)) == 0, "element ", i,
                       " decoded as ", parsed.input[i], ", expected ", expected);
      }
    }
  } else {
    MOE_FUZZ_CHECK(type == "FP32", "typed contents accepted for datatype '", type, "'");
    const auto& values = input.contents().fp32_contents();
    MOE_FUZZ_CHECK(static_cast<size_t>(values.size()) == count &&
                   std::memcmp(values.data(), parsed.input.data(), count * 4) == 0);
  }
}

// Runs the accepted rows through the model and checks what comes out. Outputs must be finite
// when every input is within `finite_input_bound`; beyond it only the routing is checked.
void CheckForwardPass(const api::ParsedInferRequest& parsed, engine::ServableModel& model,
                      double finite_input_bound) {
  const engine::ModelDescription& d = model.description();
  const int64_t rows = parsed.rows;
  const int64_t layers = d.num_moe_layers;
  const int64_t k = d.top_k;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Poisoned, so that anything the pass leaves unwritten shows up as non-finite.
  std::vector<float> output(rows * d.output_width, nan);
  std::vector<int32_t> ids(rows * layers * k, -1);
  std::vector<float> weights(rows * layers * k, nan);
  std::vector<int64_t> counts(layers * d.num_experts, -1);
  std::vector<double> entropy(layers, std::nan(""));
  engine::ModelRunOutputs outputs;
  outputs.output = output.data();
  if (parsed.want_routing()) {
    outputs.topk_ids = ids.data();
    outputs.topk_weights = weights.data();
  }
  outputs.expert_token_counts = counts.data();
  outputs.gate_entropy_sum = entropy.data();
  const absl::Status status = model.Run(parsed.input.data(), rows, outputs);
  MOE_FUZZ_CHECK(status.ok(), "forward pass failed on accepted rows: ", status.ToString());

  double largest_input = 0;
  for (const float v : parsed.input) largest_input = std::max<double>(largest_input, std::abs(v));
  const bool in_range = largest_input <= finite_input_bound;
  for (size_t i = 0; i < output.size() && in_range; ++i) {
    MOE_FUZZ_CHECK(std::isfinite(output[i]), "output ", i, " (row ", i / d.output_width, ") is ",
                   output[i], " for inputs of magnitude at most ", largest_input,
                   " (no overflow below ", finite_input_bound, ")");
  }
  for (int64_t layer = 0; layer < layers; ++layer) {
    int64_t assigned = 0;
    for (int64_t e = 0; e < d.num_experts; ++e) {
      const int64_t c = counts[layer * d.num_experts + e];
      MOE_FUZZ_CHECK(c >= 0 && c <= rows, "layer ", layer, " expert ", e, " count ", c);
      assigned += c;
    }
    MOE_FUZZ_CHECK(assigned == rows * k, "layer ", layer, " assigned ", assigned);
    const double max_entropy = static_cast<double>(rows) * std::log(d.num_experts) + 1e-3;
    MOE_FUZZ_CHECK(!in_range || (std::isfinite(entropy[layer]) && entropy[layer] >= -1e-6 &&
                                 entropy[layer] <= max_entropy),
                   "layer ", layer, " gate entropy ", entropy[layer]);
  }
  if (parsed.want_routing()) {
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t layer = 0; layer < layers; ++layer) {
        const int64_t at = (row * layers + layer) * k;
        std::set<int32_t> distinct;
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) {
          const int32_t id = ids[at + j];
          const float w = weights[at + j];
          // Ids are distinct and in range whatever the scores, NaN included (routing rules).
          MOE_FUZZ_CHECK(id >= 0 && id < d.num_experts, "row ", row, " layer ", layer, " id ", id);
          distinct.insert(id);
          MOE_FUZZ_CHECK(!in_range || (std::isfinite(w) && w >= 0.0f && w <= 1.0f + 1e-6f),
                         "weight ", w);
          sum += w;
        }
        MOE_FUZZ_CHECK(distinct.size() == static_cast<size_t>(k), "row ", row, " layer ", layer,
                       " repeats an expert");
        // The built-in model renormalises its top-k weights.
        MOE_FUZZ_CHECK(!in_range || std::abs(sum - 1.0) < 1e-4, "row ", row, " layer ", layer,
                       " weights sum to ", sum);
      }
    }
  }

  // Deterministic: the same rows give the same bits.
  std::vector<float> again(output.size(), nan);
  engine::ModelRunOutputs outputs_again;
  outputs_again.output = again.data();
  MOE_FUZZ_CHECK(model.Run(parsed.input.data(), rows, outputs_again).ok());
  MOE_FUZZ_CHECK(std::memcmp(again.data(), output.data(), output.size() * sizeof(float)) == 0,
                 "a second run of the same rows gave different outputs");
}

}  // namespace
}  // namespace moe::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // One thread: the fuzzer is single-threaded work and the machines running it are shared.
  setenv("OMP_NUM_THREADS", "1", /*overwrite=*/0);
  // ParseFromArray logs every string field that is not UTF-8; the refusal is all that matters.
  google::protobuf::SetLogHandler(nullptr);
  moe::fuzz::BuiltinModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  if (size == 0) return 0;
  engine::ServableModel& model = *fuzz::BuiltinModel().model;
  const engine::ModelDescription& description = model.description();

  inference::ModelInferRequest request;
  if ((data[0] & 1) == 0) {
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  } else {
    fuzz::ByteReader reader(data + 1, size - 1);
    request = fuzz::BuildRequest(reader, description);
  }

  const absl::StatusOr<api::ParsedInferRequest> parsed =
      api::ParseInferRequest(request, description, fuzz::kMaxRows);
  // MOE_FUZZ_VERBOSE=1 says what became of each input (when replaying files by hand).
  static const bool verbose = std::getenv("MOE_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "%s\n",
                 parsed.ok() ? absl::StrCat("accepted: ", parsed->rows, " rows").c_str()
                             : absl::StrCat("refused: ", parsed.status().ToString()).c_str());
  }
  if (!parsed.ok()) {
    const bool version = !request.model_version().empty() && request.model_version() != "1";
    MOE_FUZZ_CHECK_REFUSAL(parsed.status(), version ? absl::StatusCode::kNotFound
                                                    : absl::StatusCode::kInvalidArgument);
    return 0;
  }
  fuzz::CheckAccepted(request, *parsed, description);
  fuzz::CheckForwardPass(*parsed, model, fuzz::BuiltinModel().finite_input_bound);
  return 0;
}
