#include "server/api/infer_response_builder.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace moe::api {
namespace {

using inference::ModelInferResponse;

template <typename T>
std::string RawBytes(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

ModelInferResponse::InferOutputTensor* AddOutput(ModelInferResponse* response,
                                                 const std::string& name, const char* datatype,
                                                 std::initializer_list<int64_t> shape) {
  auto* output = response->add_outputs();
  output->set_name(name);
  output->set_datatype(datatype);
  for (int64_t dim : shape) output->add_shape(dim);
  return output;
}

}  // namespace

void BuildInferResponse(const inference::ModelInferRequest& request,
                        const ParsedInferRequest& parsed, const engine::ModelDescription& model,
                        const scheduler::InferenceResult& result,
                        inference::ModelInferResponse* response) {
  response->set_model_name(model.name);
  response->set_model_version("1");
  response->set_id(request.id());

  const int64_t rows = parsed.rows;
  if (parsed.want_output) {
    auto* output = AddOutput(response, model.output_name, "FP32", {rows, model.output_width});
    if (parsed.raw_output) {
      response->add_raw_output_contents(RawBytes(result.output));
    } else {
      output->mutable_contents()->mutable_fp32_contents()->Add(result.output.begin(),
                                                               result.output.end());
    }
  }
  if (parsed.want_routing_ids) {
    auto* output =
        AddOutput(response, kRoutingIdsOutput, "INT32", {rows, model.num_moe_layers, model.top_k});
    if (parsed.raw_output) {
      response->add_raw_output_contents(RawBytes(result.topk_ids));
    } else {
      output->mutable_contents()->mutable_int_contents()->Add(result.topk_ids.begin(),
                                                              result.topk_ids.end());
    }
  }
  if (parsed.want_routing_weights) {
    auto* output = AddOutput(response, kRoutingWeightsOutput, "FP32",
                             {rows, model.num_moe_layers, model.top_k});
    if (parsed.raw_output) {
      response->add_raw_output_contents(RawBytes(result.topk_weights));
    } else {
      output->mutable_contents()->mutable_fp32_contents()->Add(result.topk_weights.begin(),
                                                               result.topk_weights.end());
    }
  }

  auto& parameters = *response->mutable_parameters();
  parameters[kQueueMicrosParameter].set_int64_param(absl::ToInt64Microseconds(result.queue_time));
  parameters[kComputeMicrosParameter].set_int64_param(
      absl::ToInt64Microseconds(result.compute_time));
  parameters[kBatchRowsParameter].set_int64_param(result.batch_rows);
}

}  // namespace moe::api
