#include "tests/integration/integration_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "moe/kernels/dtype.h"

namespace moe::integration {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

const char* EnvOr(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

absl::Status CheckShape(const ModelInferResponse::InferOutputTensor& tensor,
                        const std::string& datatype, int64_t* elements) {
  if (tensor.datatype() != datatype) {
    return absl::InvalidArgumentError(absl::StrCat("output '", tensor.name(), "' has datatype ",
                                                   tensor.datatype(), ", expected ", datatype));
  }
  int64_t count = 1;
  for (int64_t dim : tensor.shape()) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", tensor.name(), "' has a negative dimension ", dim));
    }
    count *= dim;
  }
  *elements = count;
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<std::vector<T>> OutputValues(const ModelInferResponse& response,
                                            const std::string& name, const std::string& datatype) {
  int index = -1;
  const auto* tensor = FindOutput(response, name, &index);
  if (tensor == nullptr) {
    return absl::NotFoundError(absl::StrCat("the response has no output '", name, "'"));
  }
  int64_t elements = 0;
  if (absl::Status status = CheckShape(*tensor, datatype, &elements); !status.ok()) return status;
  std::vector<T> values;
  if (response.raw_output_contents_size() > 0) {
    if (index >= response.raw_output_contents_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", name, "' is number ", index, " but the response has only ",
                       response.raw_output_contents_size(), " raw_output_contents"));
    }
    const std::string& bytes = response.raw_output_contents(index);
    if (bytes.size() != static_cast<size_t>(elements) * sizeof(T)) {
      return absl::InvalidArgumentError(absl::StrCat("output '", name, "' has ", bytes.size(),
                                                     " raw bytes for ", elements, " elements"));
    }
    values.resize(elements);
    std::memcpy(values.data(), bytes.data(), bytes.size());
    if (tensor->has_contents()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", name, "' has both raw and typed contents"));
    }
  } else {
    if constexpr (std::is_same_v<T, float>) {
      values.assign(tensor->contents().fp32_contents().begin(),
                    tensor->contents().fp32_contents().end());
    } else {
      values.assign(tensor->contents().int_contents().begin(),
                    tensor->contents().int_contents().end());
    }
    if (values.size() != static_cast<size_t>(elements)) {
      return absl::InvalidArgumentError(absl::StrCat("output '", name, "' has ", values.size(),
                                                     " typed values for ", elements, " elements"));
    }
  }
  return values;
}

}  // namespace

std::string ServerBinary() { return EnvOr("MOE_SERVER_BINARY", MOE_SERVER_BINARY_PATH); }
std::string SyntheticModelDir() { return EnvOr("MOE_SYNTHETIC_MODEL_DIR", MOE_SYNTHETIC_MODEL); }
std::string SourceDir() { return MOE_SOURCE_DIR; }

std::vector<std::string> SyntheticModelFlag() {
  return {"--model", absl::StrCat(kSynthetic, "=", SyntheticModelDir())};
}

std::vector<std::string> OneRequestPerBatchArgs(std::vector<std::string> extra) {
  std::vector<std::string> args = SyntheticModelFlag();
  args.push_back("--max-batch-tokens");
  args.push_back(std::to_string(kOneBatchRows));
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

inference::ModelInferRequest OneBatchRequest(std::mt19937_64& rng, const InferOptions& options) {
  return MakeInferRequest(kSynthetic, UniformRows(rng, kOneBatchRows, kSyntheticWidth),
                          kOneBatchRows, kSyntheticWidth, options);
}

std::vector<std::string> DigitsModelFlag() {
  return {"--model", absl::StrCat(kDigits, "=", SourceDir(), "/models/builtin")};
}

std::vector<std::string> DigitsAndSyntheticFlags() {
  std::vector<std::string> flags = DigitsModelFlag();
  for (std::string& flag : SyntheticModelFlag()) flags.push_back(std::move(flag));
  return flags;
}

absl::StatusOr<std::unique_ptr<testing::ServerProcess>> StartServer(std::vector<std::string> args) {
  const bool names_backend = std::any_of(args.begin(), args.end(), [](const std::string& arg) {
    return arg == "--backend" || arg.rfind("--backend=", 0) == 0;
  });
  if (!names_backend) {
    args.push_back("--backend");
    args.push_back("cpu");
  }
  testing::ServerProcessOptions options;
  options.binary = ServerBinary();
  options.args = std::move(args);
  return testing::ServerProcess::Start(options);
}

std::unique_ptr<Stub> NewStub(const testing::ServerProcess& server) {
  return inference::GRPCInferenceService::NewStub(server.channel());
}

std::vector<float> UniformRows(std::mt19937_64& rng, int64_t rows, int64_t width) {
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(rows * width));
  for (float& v : values) v = dist(rng);
  return values;
}

std::vector<float> RoundedTo(const std::string& datatype, const std::vector<float>& values) {
  std::vector<float> rounded(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (datatype == "FP16") {
      rounded[i] = kernels::HalfToFloat(kernels::FloatToHalf(values[i]));
    } else if (datatype == "BF16") {
      rounded[i] = kernels::BF16ToFloat(kernels::FloatToBF16(values[i]));
    } else {
      rounded[i] = values[i];
    }
  }
  return rounded;
}

ModelInferRequest MakeInferRequest(const std::string& model, const std::vector<float>& values,
                                   int64_t rows, int64_t width, const InferOptions& options) {
  ModelInferRequest request;
  request.set_model_name(model);
  request.set_id(options.id);
  auto* input = request.add_inputs();
  input->set_name(options.input_name);
  input->set_datatype(options.datatype);
  input->add_shape(rows);
  input->add_shape(width);
  if (options.datatype == "FP16" || options.datatype == "BF16") {
    std::string bytes(values.size() * sizeof(uint16_t), '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t bits = options.datatype == "FP16" ? kernels::FloatToHalf(values[i])
                                                       : kernels::FloatToBF16(values[i]);
      std::memcpy(bytes.data() + i * sizeof(uint16_t), &bits, sizeof(bits));
    }
    request.add_raw_input_contents(std::move(bytes));
  } else if (options.raw) {
    request.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  } else {
    input->mutable_contents()->mutable_fp32_contents()->Add(values.begin(), values.end());
  }
  auto& parameters = *request.mutable_parameters();
  if (options.routing) parameters["routing"].set_bool_param(true);
  if (options.priority) parameters["priority"].set_int64_param(*options.priority);
  if (options.timeout_us) parameters["timeout"].set_int64_param(*options.timeout_us);
  for (const std::string& name : options.outputs) request.add_outputs()->set_name(name);
  return request;
}

const ModelInferResponse::InferOutputTensor* FindOutput(const ModelInferResponse& response,
                                                        const std::string& name, int* index) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() == name) {
      if (index != nullptr) *index = i;
      return &response.outputs(i);
    }
  }
  return nullptr;
}

absl::StatusOr<std::vector<float>> OutputFloats(const ModelInferResponse& response,
                                                const std::string& name) {
  return OutputValues<float>(response, name, "FP32");
}

absl::StatusOr<std::vector<int32_t>> OutputInt32s(const ModelInferResponse& response,
                                                  const std::string& name) {
  return OutputValues<int32_t>(response, name, "INT32");
}

std::optional<int64_t> Int64Parameter(const ModelInferResponse& response, const std::string& key) {
  const auto it = response.parameters().find(key);
  if (it == response.parameters().end()) return std::nullopt;
  switch (it->second.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      return it->second.int64_param();
    case inference::InferParameter::kUint64Param:
      return static_cast<int64_t>(it->second.uint64_param());
    default:
      return std::nullopt;
  }
}

grpc::Status Infer(Stub& stub, const ModelInferRequest& request, ModelInferResponse* response,
                   absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMicroseconds(timeout));
  return stub.ModelInfer(&context, request, response);
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("code ", static_cast<int>(code));
  }
}

std::string Describe(const grpc::Status& status) {
  if (status.ok()) return "OK";
  return absl::StrCat(StatusCodeName(status.error_code()), ": ", status.error_message());
}

double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace moe::integration
