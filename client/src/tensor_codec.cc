#include "client/src/tensor_codec.h"

#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/src/float16.h"

namespace moe::client {
namespace {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The number of elements of `shape`; nullopt for a negative dimension or an overflow.
template <typename Shape>
std::optional<int64_t> ElementCount(const Shape& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) return std::nullopt;
    count *= dim;
  }
  return count;
}

size_t WireTypeBytes(WireType type) { return type == WireType::kFp32 ? 4 : 2; }

void AppendLittleEndian(uint32_t bits, size_t bytes, std::string& out) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xffu));
}

uint32_t ReadLittleEndian32(const char* data) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(data);
  return static_cast<uint32_t>(bytes[0]) | static_cast<uint32_t>(bytes[1]) << 8 |
         static_cast<uint32_t>(bytes[2]) << 16 | static_cast<uint32_t>(bytes[3]) << 24;
}

std::string RawBytes(const InferInput& input) {
  std::string out;
  out.reserve(input.values.size() * WireTypeBytes(input.wire_type));
  for (float value : input.values) {
    switch (input.wire_type) {
      case WireType::kFp32: {
        uint32_t bits;
        std::memcpy(&bits, &value, sizeof(bits));
        AppendLittleEndian(bits, 4, out);
        break;
      }
      case WireType::kFp16:
        AppendLittleEndian(FloatToHalfBits(value), 2, out);
        break;
      case WireType::kBf16:
        AppendLittleEndian(FloatToBFloat16Bits(value), 2, out);
        break;
    }
  }
  return out;
}

absl::Status DecodeRaw(const inference::ModelInferResponse::InferOutputTensor& tensor,
                       const std::string& bytes, int64_t count, OutputTensor& output) {
  if (bytes.size() % 4 != 0 || bytes.size() / 4 != static_cast<uint64_t>(count)) {
    return absl::InternalError(absl::StrCat(
        "response output '", tensor.name(), "' has ", bytes.size(), " bytes of raw contents; ",
        tensor.datatype(), " ", ShapeString(tensor.shape()), " needs 4 x ", count));
  }
  if (output.datatype == "FP32") {
    output.fp32.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t bits = ReadLittleEndian32(bytes.data() + 4 * i);
      std::memcpy(&output.fp32[i], &bits, sizeof(bits));
    }
  } else {
    output.int32.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      output.int32[i] = static_cast<int32_t>(ReadLittleEndian32(bytes.data() + 4 * i));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status CopyTyped(const inference::ModelInferResponse::InferOutputTensor& tensor,
                       const google::protobuf::RepeatedField<T>& values, int64_t count,
                       std::vector<T>& out) {
  if (values.size() != count) {
    return absl::InternalError(absl::StrCat("response output '", tensor.name(), "' has ",
                                            values.size(), " typed values; ", tensor.datatype(),
                                            " ", ShapeString(tensor.shape()), " needs ", count));
  }
  out.assign(values.begin(), values.end());
  return absl::OkStatus();
}

std::optional<int64_t> Int64Parameter(const inference::ModelInferResponse& response,
                                      const std::string& key) {
  auto it = response.parameters().find(key);
  if (it == response.parameters().end()) return std::nullopt;
  switch (it->second.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      return it->second.int64_param();
    case inference::InferParameter::kUint64Param:
      if (it->second.uint64_param() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return std::nullopt;
      }
      return static_cast<int64_t>(it->second.uint64_param());
    default:
      return std::nullopt;
  }
}

}  // namespace

absl::string_view WireTypeName(WireType type) {
  switch (type) {
    case WireType::kFp32:
      return "FP32";
    case WireType::kFp16:
      return "FP16";
    case WireType::kBf16:
      return "BF16";
  }
  return "?";
}

absl::Status ValidateInputs(const std::vector<InferInput>& inputs) {
  if (inputs.empty()) return absl::InvalidArgumentError("the request has no inputs");
  std::set<std::string> names;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const InferInput& input = inputs[i];
    if (input.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("input ", i, " has an empty name"));
    }
    if (!names.insert(input.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' is given more than once"));
    }
    if (input.shape.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' has no shape (expected e.g. [rows, width])"));
    }
    const std::optional<int64_t> count = ElementCount(input.shape);
    if (!count.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' has shape ", ShapeString(input.shape),
                       ": dimensions must be >= 0 and their product must fit in int64"));
    }
    if (static_cast<uint64_t>(*count) != input.values.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' has shape ", ShapeString(input.shape), " (",
                       *count, " values) but ", input.values.size(), " values"));
    }
    if (!input.raw && input.wire_type != WireType::kFp32) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' is ", WireTypeName(input.wire_type),
                       " and typed; the protocol has typed contents for FP32 only: send it raw"));
    }
    if (input.raw != inputs[0].raw) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' is ", input.raw ? "raw" : "typed", " but input '",
                       inputs[0].name, "' is ", inputs[0].raw ? "raw" : "typed",
                       "; a request's inputs are all raw or all typed"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<inference::ModelInferRequest> EncodeInferRequest(
    const std::string& model, const std::vector<InferInput>& inputs, const InferOptions& options) {
  if (absl::Status status = ValidateInputs(inputs); !status.ok()) return status;
  if (options.priority.has_value() && *options.priority < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "priority is ", *options.priority, "; it must be >= 1 (1 is served first) or 0 (default)"));
  }
  if (options.timeout.has_value() && *options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout is ", absl::FormatDuration(*options.timeout), "; it must be > 0 (or infinite)"));
  }
  if (options.queue_timeout.has_value() && *options.queue_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("queue_timeout is ",
                                                   absl::FormatDuration(*options.queue_timeout),
                                                   "; it must be >= 0 (0: none)"));
  }

  inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_id(options.request_id);
  for (const InferInput& input : inputs) {
    inference::ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
    tensor->set_name(input.name);
    tensor->set_datatype(std::string(WireTypeName(input.wire_type)));
    tensor->mutable_shape()->Add(input.shape.begin(), input.shape.end());
    if (input.raw) {
      request.add_raw_input_contents(RawBytes(input));
    } else {
      tensor->mutable_contents()->mutable_fp32_contents()->Add(input.values.begin(),
                                                               input.values.end());
    }
  }
  for (const std::string& name : options.outputs) request.add_outputs()->set_name(name);
  auto& parameters = *request.mutable_parameters();
  if (options.want_routing) parameters[kRoutingParameter].set_bool_param(true);
  if (options.priority.has_value())
    parameters[kPriorityParameter].set_int64_param(*options.priority);
  if (options.queue_timeout.has_value()) {
    int64_t micros = absl::ToInt64Microseconds(*options.queue_timeout);
    if (absl::Microseconds(micros) < *options.queue_timeout) ++micros;  // 0.5 µs is not "none"
    parameters[kTimeoutParameter].set_int64_param(micros);
  }
  return request;
}

absl::StatusOr<InferResult> DecodeInferResponse(const inference::ModelInferResponse& response) {
  const bool raw = response.raw_output_contents_size() > 0;
  if (raw && response.raw_output_contents_size() != response.outputs_size()) {
    return absl::InternalError(absl::StrCat("the response has ", response.outputs_size(),
                                            " outputs but ", response.raw_output_contents_size(),
                                            " raw output contents"));
  }
  InferResult result;
  result.model_name = response.model_name();
  result.id = response.id();
  result.outputs.reserve(response.outputs_size());
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& tensor = response.outputs(i);
    OutputTensor& output = result.outputs.emplace_back();
    output.name = tensor.name();
    output.datatype = tensor.datatype();
    output.shape.assign(tensor.shape().begin(), tensor.shape().end());
    if (output.datatype != "FP32" && output.datatype != "INT32") {
      return absl::UnimplementedError(absl::StrCat("response output '", tensor.name(),
                                                   "' has datatype ", tensor.datatype(),
                                                   "; the client reads FP32 and INT32"));
    }
    const std::optional<int64_t> count = ElementCount(tensor.shape());
    if (!count.has_value()) {
      return absl::InternalError(absl::StrCat("response output '", tensor.name(),
                                              "' has an invalid shape ",
                                              ShapeString(tensor.shape())));
    }
    absl::Status status;
    if (raw) {
      status = DecodeRaw(tensor, response.raw_output_contents(i), *count, output);
    } else if (output.datatype == "FP32") {
      status = CopyTyped(tensor, tensor.contents().fp32_contents(), *count, output.fp32);
    } else {
      status = CopyTyped(tensor, tensor.contents().int_contents(), *count, output.int32);
    }
    if (!status.ok()) return status;
  }
  result.queue_us = Int64Parameter(response, "queue_us");
  result.compute_us = Int64Parameter(response, "compute_us");
  result.batch_rows = Int64Parameter(response, "batch_rows");
  return result;
}

}  // namespace moe::client
