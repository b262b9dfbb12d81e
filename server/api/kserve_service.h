// The Open Inference Protocol (KServe v2) gRPC service on gRPC's callback API. Handlers never
// run model code: ModelInfer validates, hands the rows to the model's batch scheduler and
// answers from the scheduler's completion.
#pragma once

#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/api/model_registry.h"
#include "server/metrics/server_metrics.h"

namespace moe::api {

struct KServeServiceOptions {
  std::string server_name = "moe-serve";
  std::string server_version;
};

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `metrics` (null: none) counts every ModelInfer call's outcome and latency.
  KServeService(ModelRegistry* registry, KServeServiceOptions options,
                metrics::ServerMetrics* metrics = nullptr)
      : registry_(registry), options_(std::move(options)), metrics_(metrics) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

 private:
  ModelRegistry* const registry_;
  const KServeServiceOptions options_;
  metrics::ServerMetrics* const metrics_;
};

}  // namespace moe::api
