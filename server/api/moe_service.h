// moe.v1.MoEService: what the Open Inference Protocol has no word for (model architecture, MoE
// shape, backend and device).
#pragma once

#include "moe/v1/moe_service.grpc.pb.h"
#include "server/api/model_registry.h"

namespace moe::api {

class MoEService final : public moe::v1::MoEService::CallbackService {
 public:
  explicit MoEService(ModelRegistry* registry) : registry_(registry) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const moe::v1::ListModelsRequest* request,
                                       moe::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const moe::v1::GetModelInfoRequest* request,
                                         moe::v1::ModelInfo* response) override;

 private:
  ModelRegistry* const registry_;
};

}  // namespace moe::api
