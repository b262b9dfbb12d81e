// moe.v1.MoEService: what the Open Inference Protocol has no word for (model architecture, MoE
// shape, backend and device).
#pragma once

#include "moe/v1/moe_service.grpc.pb.h"
#include "server/api/model_registry.h"
#include "server/metrics/server_metrics.h"

namespace moe::api {

class MoEService final : public moe::v1::MoEService::CallbackService {
 public:
  // `metrics` may be null.
  MoEService(ModelRegistry* registry, metrics::ServerMetrics* metrics)
      : registry_(registry), metrics_(metrics) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const moe::v1::ListModelsRequest* request,
                                       moe::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const moe::v1::GetModelInfoRequest* request,
                                         moe::v1::ModelInfo* response) override;
  grpc::ServerWriteReactor<moe::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const moe::v1::GenerateRequest* request) override;

 private:
  ModelRegistry* const registry_;
  metrics::ServerMetrics* const metrics_;
};

}  // namespace moe::api
