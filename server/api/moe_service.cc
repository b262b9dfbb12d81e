#include "server/api/moe_service.h"

#include <string>

#include "server/api/generate_call.h"
#include "server/api/grpc_status.h"

namespace moe::api {
namespace {

// A loading model is listed by name only.
void FillModelInfo(const ModelRegistry& registry, const std::string& name,
                   moe::v1::ModelInfo* info) {
  info->set_name(name);
  info->set_ready(registry.IsReady(name));
  absl::StatusOr<scheduler::BatchScheduler*> scheduler = registry.FindLoaded(name);
  if (!scheduler.ok()) return;
  const engine::ModelDescription& model = (*scheduler)->model();
  info->set_architecture(model.architecture);
  info->set_family(model.family);
  info->set_tensor_servable(model.tensor_servable);
  info->set_not_servable_reason(model.not_servable_reason);
  info->set_num_layers(model.num_layers);
  info->set_num_moe_layers(model.num_moe_layers);
  info->set_num_experts(model.num_experts);
  info->set_top_k(model.top_k);
  info->set_hidden_size(model.hidden_size);
  info->set_expert_ffn_size(model.expert_ffn_size);
  info->set_activation(model.activation);
  info->set_weight_dtype(std::string(kernels::DTypeName(model.weight_dtype)));
  info->set_weight_bytes(model.weight_bytes);
  info->set_backend(model.backend);
  info->set_device(model.device);
  info->set_input_name(model.input_name);
  info->set_input_width(model.input_width);
  info->set_output_name(model.output_name);
  info->set_output_width(model.output_width);
  for (const std::string& label : model.output_labels) info->add_output_labels(label);
  if (const Generator found = registry.GeneratorOf(name); found.scheduler != nullptr) {
    const scheduler::GenerationScheduler* generator = found.scheduler;
    info->set_generates(true);
    info->set_has_tokenizer(found.tokenizer != nullptr);
    info->set_vocab_size(generator->model().spec().vocab_size);
    info->set_max_model_len(generator->max_model_len());
    for (int64_t id : generator->model().spec().eos_token_ids) {
      info->add_eos_token_ids(static_cast<int32_t>(id));
    }
  }
}

}  // namespace

grpc::ServerUnaryReactor* MoEService::ListModels(grpc::CallbackServerContext* context,
                                                 const moe::v1::ListModelsRequest*,
                                                 moe::v1::ListModelsResponse* response) {
  for (const std::string& name : registry_->Names()) {
    FillModelInfo(*registry_, name, response->add_models());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* MoEService::GetModelInfo(grpc::CallbackServerContext* context,
                                                   const moe::v1::GetModelInfoRequest* request,
                                                   moe::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<scheduler::BatchScheduler*> scheduler = registry_->FindLoaded(request->name());
  if (!scheduler.ok() && absl::IsNotFound(scheduler.status())) {
    reactor->Finish(ToGrpcStatus(scheduler.status()));
    return reactor;
  }
  FillModelInfo(*registry_, request->name(), response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<moe::v1::GenerateResponse>* MoEService::Generate(
    grpc::CallbackServerContext* context, const moe::v1::GenerateRequest* request) {
  return StartGenerateCall(context, request, registry_, metrics_);
}

}  // namespace moe::api
