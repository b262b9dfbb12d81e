#include "server/api/infer_request_parser.h"

#include <cmath>
#include <cstring>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "server/model/error_text.h"

namespace moe::api {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Strings and shapes from the request reach messages only through Quote and ShapeText. A client
// may send megabytes of name, a shape of a million dimensions, or control bytes; echoed as they
// are, the message (percent-encoded in the grpc-message trailer) outgrows the metadata a gRPC
// client accepts (8 KiB by default in gRPC 1.x), and the client gets RESOURCE_EXHAUSTED about
// metadata instead of this error. Found by tests/fuzz/infer_request_fuzzer; Quote escapes and
// cuts short as the checkpoint readers do.
using model::Quote;

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  constexpr int kMaxShownDims = 8;
  if (shape.size() <= kMaxShownDims) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + kMaxShownDims, ", "),
                      ", ...] (", shape.size(), " dimensions)");
}

// The element type of an accepted input datatype, with its size in bytes.
struct InputType {
  kernels::DType dtype;
  size_t bytes;
};

absl::StatusOr<InputType> ParseInputType(const std::string& datatype, const std::string& name) {
  if (datatype == "FP32") return InputType{kernels::DType::kF32, 4};
  if (datatype == "FP16") return InputType{kernels::DType::kF16, 2};
  if (datatype == "BF16") return InputType{kernels::DType::kBF16, 2};
  return Invalid(absl::StrCat("input ", Quote(name), " has datatype ", Quote(datatype),
                              "; this model accepts FP32, FP16 or BF16"));
}

// The number of typed values the contents message carries in fields other than fp32.
int64_t NonFp32TypedValues(const inference::InferTensorContents& contents) {
  return contents.bool_contents_size() + contents.int_contents_size() +
         contents.int64_contents_size() + contents.uint_contents_size() +
         contents.uint64_contents_size() + contents.fp64_contents_size() +
         contents.bytes_contents_size();
}

absl::Status ParseParameters(const ModelInferRequest& request, ParsedInferRequest* parsed) {
  for (const auto& [key, value] : request.parameters()) {
    if (key == kRoutingParameter) {
      if (value.parameter_choice_case() != InferParameter::kBoolParam) {
        return Invalid("parameter 'routing' must be a bool_param");
      }
      parsed->want_routing_ids = parsed->want_routing_weights = value.bool_param();
    } else if (key == kTimeoutParameter) {
      if (value.parameter_choice_case() != InferParameter::kInt64Param || value.int64_param() < 0) {
        return Invalid("parameter 'timeout' must be an int64_param >= 0 (microseconds)");
      }
      // 0 means no timeout, as in Triton.
      if (value.int64_param() > 0) parsed->timeout = absl::Microseconds(value.int64_param());
    } else if (key == kPriorityParameter) {
      int64_t priority = -1;
      if (value.parameter_choice_case() == InferParameter::kInt64Param) {
        priority = value.int64_param();
      } else if (value.parameter_choice_case() == InferParameter::kUint64Param &&
                 value.uint64_param() <= static_cast<uint64_t>(INT64_MAX)) {
        priority = static_cast<int64_t>(value.uint64_param());
      }
      if (priority < 0) {
        return Invalid("parameter 'priority' must be an integer >= 0 (1 = highest, 0 = default)");
      }
      parsed->priority = priority;
    }
    // Other parameters (client tags, tracing ids) are accepted and ignored, as Triton does.
  }
  return absl::OkStatus();
}

absl::Status ParseRequestedOutputs(const ModelInferRequest& request,
                                   const engine::ModelDescription& model,
                                   ParsedInferRequest* parsed) {
  if (request.outputs().empty()) {
    parsed->want_output = true;  // plus the routing outputs when "routing" is set
    return absl::OkStatus();
  }
  constexpr int kOutputsOffered = 3;
  if (request.outputs_size() > kOutputsOffered) {
    return Invalid(absl::StrCat("request asks for ", request.outputs_size(), " outputs; model '",
                                model.name, "' has ", kOutputsOffered, " (", model.output_name,
                                ", ", kRoutingIdsOutput, ", ", kRoutingWeightsOutput, ")"));
  }
  std::set<std::string> seen;
  for (const auto& output : request.outputs()) {
    if (!seen.insert(output.name()).second) {
      return Invalid(absl::StrCat("output ", Quote(output.name()), " is requested twice"));
    }
    if (output.parameters().contains("classification")) {
      return Invalid("the classification extension is not supported; request the raw output");
    }
    if (output.name() == model.output_name) {
      parsed->want_output = true;
    } else if (output.name() == kRoutingIdsOutput) {
      parsed->want_routing_ids = true;
    } else if (output.name() == kRoutingWeightsOutput) {
      parsed->want_routing_weights = true;
    } else {
      return Invalid(absl::StrCat("model '", model.name, "' has no output ", Quote(output.name()),
                                  "; its outputs are '", model.output_name, "', '",
                                  kRoutingIdsOutput, "' and '", kRoutingWeightsOutput, "'"));
    }
  }
  return absl::OkStatus();
}

// Decodes `count` little-endian values of `type` from `bytes` into float32.
void DecodeRaw(const std::string& bytes, const InputType& type, size_t count, float* out) {
  if (type.dtype == kernels::DType::kF32) {
    std::memcpy(out, bytes.data(), count * sizeof(float));
    return;
  }
  kernels::WidenToFloat(type.dtype, bytes.data(), out, count);
}

absl::Status CheckFinite(const std::vector<float>& values, int64_t width, const std::string& name) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return Invalid(absl::StrCat("input '", name, "' holds ",
                                  std::isnan(values[i]) ? "NaN" : "an infinite value", " at row ",
                                  i / width, ", column ", i % width, "; inputs must be finite"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedInferRequest> ParseInferRequest(const ModelInferRequest& request,
                                                     const engine::ModelDescription& model,
                                                     int64_t max_rows) {
  if (!model.tensor_servable) return absl::FailedPreconditionError(model.not_servable_reason);
  if (!request.model_version().empty() && request.model_version() != "1") {
    return absl::NotFoundError(absl::StrCat("model '", model.name, "' has no version ",
                                            Quote(request.model_version()),
                                            "; it serves version 1"));
  }

  ParsedInferRequest parsed;
  MOE_RETURN_IF_ERROR(ParseParameters(request, &parsed));
  MOE_RETURN_IF_ERROR(ParseRequestedOutputs(request, model, &parsed));

  if (request.inputs().empty()) {
    return Invalid(absl::StrCat("request has no inputs; model '", model.name, "' takes input '",
                                model.input_name, "' FP32 [rows, ", model.input_width, "]"));
  }
  for (const auto& input : request.inputs()) {
    if (input.name() != model.input_name) {
      return Invalid(absl::StrCat("model '", model.name, "' has no input ", Quote(input.name()),
                                  "; it takes one input, '", model.input_name, "'"));
    }
  }
  if (request.inputs_size() > 1) {
    return Invalid(absl::StrCat("input '", model.input_name, "' is given ", request.inputs_size(),
                                " times; model '", model.name, "' takes it once"));
  }
  const auto& input = request.inputs(0);
  MOE_ASSIGN_OR_RETURN(const InputType type, ParseInputType(input.datatype(), input.name()));

  const auto& shape = input.shape();
  if (shape.size() != 2) {
    return Invalid(absl::StrCat("input '", input.name(), "' has shape ", ShapeText(shape),
                                "; expected [rows, ", model.input_width, "]"));
  }
  for (int i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return Invalid(absl::StrCat("input '", input.name(), "' has shape ", ShapeText(shape),
                                  ": dimension ", i, " is negative"));
    }
  }
  if (shape[1] != model.input_width) {
    return Invalid(absl::StrCat("input '", input.name(), "' has shape ", ShapeText(shape),
                                "; model '", model.name, "' expects [rows, ", model.input_width,
                                "]"));
  }
  if (shape[0] == 0) {
    return Invalid(absl::StrCat("input '", input.name(), "' is empty (shape ", ShapeText(shape),
                                "); send at least one row"));
  }
  if (shape[0] > max_rows) {
    return Invalid(absl::StrCat("input '", input.name(), "' has ", shape[0], " rows; at most ",
                                max_rows, " rows are accepted per request (--max-batch-tokens)"));
  }
  // Both dimensions are now bounded (rows <= max_rows, width = the model's), so no overflow.
  parsed.rows = shape[0];
  const size_t count = static_cast<size_t>(shape[0] * shape[1]);
  parsed.input.resize(count);

  if (!request.raw_input_contents().empty()) {
    if (request.raw_input_contents_size() != request.inputs_size()) {
      return Invalid(absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                                  " entries for ", request.inputs_size(), " inputs"));
    }
    if (input.has_contents()) {
      return Invalid(absl::StrCat("input '", input.name(),
                                  "' has both typed contents and raw_input_contents"));
    }
    const std::string& bytes = request.raw_input_contents(0);
    if (bytes.size() != count * type.bytes) {
      return Invalid(absl::StrCat("input '", input.name(), "' has ", bytes.size(),
                                  " raw bytes; shape ", ShapeText(shape), " of ", input.datatype(),
                                  " needs ", count * type.bytes));
    }
    DecodeRaw(bytes, type, count, parsed.input.data());
    parsed.raw_output = true;
  } else {
    if (type.dtype != kernels::DType::kF32) {
      return Invalid(absl::StrCat("input '", input.name(), "' is ", input.datatype(),
                                  ", which has no typed contents field: send it in "
                                  "raw_input_contents"));
    }
    const auto& contents = input.contents();
    if (NonFp32TypedValues(contents) > 0) {
      return Invalid(absl::StrCat("input '", input.name(),
                                  "' is FP32 but carries values in another typed field; use "
                                  "fp32_contents"));
    }
    if (static_cast<size_t>(contents.fp32_contents_size()) != count) {
      return Invalid(absl::StrCat("input '", input.name(), "' has ", contents.fp32_contents_size(),
                                  " fp32_contents values; shape ", ShapeText(shape), " needs ",
                                  count));
    }
    std::memcpy(parsed.input.data(), contents.fp32_contents().data(), count * sizeof(float));
  }
  MOE_RETURN_IF_ERROR(CheckFinite(parsed.input, model.input_width, input.name()));
  return parsed;
}

}  // namespace moe::api
