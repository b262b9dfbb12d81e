#include "server/api/kserve_service.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <new>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/api/grpc_status.h"
#include "server/api/infer_request_parser.h"
#include "server/api/infer_response_builder.h"
#include "server/common/happens_before.h"

namespace moe::api {
namespace {

using scheduler::BatchScheduler;
using scheduler::InferenceRequest;
using scheduler::InferenceResult;
using scheduler::RequestTicket;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Finite inputs can still overflow float32 inside a model (the built-in one from about 1e37 on):
// such an answer is refused rather than returned as NaN with OK.
absl::Status CheckFiniteOutput(const std::vector<float>& output, const std::string& model) {
  for (const float value : output) {
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", model,
                       "' computed a non-finite output for this request: its input values "
                       "are too large for the model (they overflow float32 inside it)"));
    }
  }
  return absl::OkStatus();
}

// The client's deadline, tightened by the request's "timeout" parameter.
absl::Time RequestDeadline(const grpc::CallbackServerContext& context,
                           const ParsedInferRequest& parsed) {
  absl::Time deadline = absl::InfiniteFuture();
  const auto grpc_deadline = context.deadline();
  if (grpc_deadline != std::chrono::system_clock::time_point::max()) {
    deadline = absl::FromChrono(grpc_deadline);
  }
  if (parsed.timeout.has_value()) deadline = std::min(deadline, absl::Now() + *parsed.timeout);
  return deadline;
}

// One ModelInfer call in flight. gRPC keeps the reactor alive until Finish has been called and
// OnDone has run; Finish is called exactly once, from the request's completion (scheduler
// thread) or here when the request is refused before it is queued. Cancellation and the
// completion race, so what both touch lives in a shared CancelState.
class InferCall final : public grpc::ServerUnaryReactor {
 public:
  InferCall(grpc::CallbackServerContext* context, const inference::ModelInferRequest* request,
            inference::ModelInferResponse* response, ModelRegistry* registry,
            metrics::ServerMetrics* metrics)
      : context_(context),
        request_(request),
        response_(response),
        registry_(registry),
        metrics_(metrics != nullptr ? metrics->ForModel(request->model_name()) : nullptr) {}

  void Start() {
    absl::StatusOr<BatchScheduler*> scheduler = registry_->FindReady(request_->model_name());
    if (!scheduler.ok()) return Done(scheduler.status());
    const engine::ModelDescription& model = (*scheduler)->model();
    absl::StatusOr<ParsedInferRequest> parsed =
        ParseInferRequest(*request_, model, (*scheduler)->options().max_batch_rows);
    if (!parsed.ok()) return Done(parsed.status());

    const absl::Time deadline = RequestDeadline(*context_, *parsed);
    auto shared = std::make_shared<ParsedInferRequest>(std::move(*parsed));
    std::vector<float> input = std::move(shared->input);
    auto request = std::make_unique<InferenceRequest>(
        std::move(input), shared->rows, shared->want_routing(), deadline, shared->priority,
        // The description lives as long as the scheduler, which outlives every request.
        [this, shared, model = &model](absl::Status status, InferenceResult result) {
          if (status.ok()) status = CheckFiniteOutput(result.output, model->name);
          if (status.ok()) {
            try {
              BuildInferResponse(*request_, *shared, *model, result, response_);
            } catch (const std::bad_alloc&) {
              response_->Clear();
              status = absl::ResourceExhaustedError("out of memory building the response");
            }
          }
          Done(status);
        });

    // From here the completion may run (and the call finish) at any moment: only `cancel`
    // and `scheduler` are used below, never members.
    std::shared_ptr<CancelState> cancel = cancel_;
    BatchScheduler* const target = *scheduler;
    absl::StatusOr<RequestTicket> ticket = target->Submit(std::move(request));
    if (!ticket.ok()) return Done(ticket.status());
    absl::MutexLock lock(&cancel->mu);
    cancel->scheduler = target;
    cancel->ticket = *ticket;
    if (cancel->cancelled) target->Cancel(*ticket);
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&cancel_->mu);
      cancel_->cancelled = true;
      if (cancel_->scheduler != nullptr) cancel_->scheduler->Cancel(cancel_->ticket);
    }
    // gRPC runs OnDone after OnCancel has returned, but orders the two inside libgrpc++.
    common::HappensBefore(this);
  }

  void OnDone() override {
    common::HappensAfter(this);  // after OnCancel
    delete this;
  }

 private:
  // Counts the call's outcome and finishes it; the one way an InferCall ends.
  void Done(const absl::Status& status) {
    if (metrics_ != nullptr) metrics_->RecordCall(status.code(), absl::Now() - arrival_);
    Finish(ToGrpcStatus(status));
  }

  struct CancelState {
    absl::Mutex mu;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    BatchScheduler* scheduler ABSL_GUARDED_BY(mu) = nullptr;  // set once queued
    RequestTicket ticket ABSL_GUARDED_BY(mu);
  };

  grpc::CallbackServerContext* const context_;
  const inference::ModelInferRequest* const request_;
  inference::ModelInferResponse* const response_;
  ModelRegistry* const registry_;
  metrics::ModelMetrics* const metrics_;  // null: no metrics
  const absl::Time arrival_ = absl::Now();
  std::shared_ptr<CancelState> cancel_ = std::make_shared<CancelState>();
};

}  // namespace

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* context,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* context,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  response->set_ready(registry_->AllReady());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* context,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  absl::StatusOr<BatchScheduler*> scheduler = registry_->FindLoaded(request->name());
  if (!scheduler.ok() && absl::IsNotFound(scheduler.status())) {
    return FinishNow(context, scheduler.status());
  }
  response->set_ready(registry_->IsReady(request->name()));
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(options_.server_name);
  response->set_version(options_.server_version);
  // "parameters": request/response parameters; "schedule_policy": the "priority" and
  // "timeout" request parameters.
  response->add_extensions("parameters");
  response->add_extensions("schedule_policy");
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  absl::StatusOr<BatchScheduler*> scheduler = registry_->FindLoaded(request->name());
  if (!scheduler.ok()) return FinishNow(context, scheduler.status());
  if (!request->version().empty() && request->version() != "1") {
    return FinishNow(
        context, absl::NotFoundError(absl::StrCat("model '", request->name(), "' has no version '",
                                                  request->version(), "'; it serves version 1")));
  }
  const engine::ModelDescription& model = (*scheduler)->model();
  response->set_name(model.name);
  response->add_versions("1");
  response->set_platform(absl::StrCat("moe-serve_", model.family));
  if (model.tensor_servable) {
    auto* input = response->add_inputs();
    input->set_name(model.input_name);
    input->set_datatype("FP32");
    input->add_shape(-1);
    input->add_shape(model.input_width);
    auto* output = response->add_outputs();
    output->set_name(model.output_name);
    output->set_datatype("FP32");
    output->add_shape(-1);
    output->add_shape(model.output_width);
    for (const auto& [name, datatype] :
         {std::pair{kRoutingIdsOutput, "INT32"}, std::pair{kRoutingWeightsOutput, "FP32"}}) {
      auto* routing = response->add_outputs();
      routing->set_name(name);
      routing->set_datatype(datatype);
      routing->add_shape(-1);
      routing->add_shape(model.num_moe_layers);
      routing->add_shape(model.top_k);
    }
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* context,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  auto* call = new InferCall(context, request, response, registry_, metrics_);
  call->Start();
  return call;
}

}  // namespace moe::api
