// Client over the generated stubs of inference.GRPCInferenceService, moe.v1.MoEService and
// grpc.health.v1.Health. Blocking calls retry in the calling thread (sleeping between attempts).
// InferAsync uses gRPC's callback API; a retry is scheduled with a grpc::Alarm, whose callback
// runs on gRPC's executor when the back-off has passed, so no thread sleeps or blocks meanwhile.
// Generate reads its stream in the calling thread, retrying only while nothing has arrived.
#include "moe/client/client.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "client/src/channel.h"
#include "client/src/generate_codec.h"
#include "client/src/retry.h"
#include "client/src/status.h"
#include "client/src/tensor_codec.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "moe/common/status_macros.h"
#include "moe/v1/moe_service.grpc.pb.h"

namespace moe::client {
namespace {

constexpr char kModelInfer[] = "ModelInfer";
constexpr char kGenerate[] = "Generate";
// WaitForReady asks this often, each question waiting at most kReadyPollTimeout.
constexpr absl::Duration kReadyPollInterval = absl::Milliseconds(100);
constexpr absl::Duration kReadyPollTimeout = absl::Seconds(5);

absl::BitGenRef Random() {
  thread_local absl::BitGen bit_gen;
  return bit_gen;
}

// One InferAsync call: the request, the current attempt's context and response, the alarm of a
// pending retry. Owned by whatever callback comes next (the RPC's or the alarm's); freed after
// `done` has run.
struct AsyncInferCall {
  inference::ModelInferRequest request;
  absl::Time deadline;
  int attempt = 0;
  std::unique_ptr<grpc::ClientContext> context;
  inference::ModelInferResponse response;
  std::unique_ptr<grpc::Alarm> alarm;
  absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done;
};

class ClientImpl final : public Client {
 public:
  ClientImpl(ConnectOptions options, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)),
        channel_(std::move(channel)),
        kserve_(inference::GRPCInferenceService::NewStub(channel_)),
        moe_(moe::v1::MoEService::NewStub(channel_)),
        health_(grpc::health::v1::Health::NewStub(channel_)) {}
  ClientImpl(const ClientImpl&) = delete;
  ClientImpl& operator=(const ClientImpl&) = delete;

  absl::Status WaitForReady(absl::Duration timeout) override;
  absl::StatusOr<bool> ServerLive() override;
  absl::StatusOr<bool> ServerReady() override;
  absl::StatusOr<bool> ModelReady(const std::string& model) override;
  absl::StatusOr<HealthStatus> Health(const std::string& service) override;
  absl::StatusOr<std::vector<ModelInfo>> ListModels() override;
  absl::StatusOr<ModelInfo> DescribeModel(const std::string& model) override;
  absl::StatusOr<InferResult> Infer(const std::string& model, const std::vector<InferInput>& inputs,
                                    const InferOptions& options) override;
  void InferAsync(const std::string& model, const std::vector<InferInput>& inputs,
                  const InferOptions& options,
                  absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done) override;
  absl::StatusOr<GenerateResult> Generate(const std::string& model,
                                          const std::vector<int32_t>& prompt_token_ids,
                                          const GenerateOptions& options,
                                          GenerateCallback on_chunk) override;

 private:
  absl::Time Deadline(std::optional<absl::Duration> timeout = std::nullopt) const {
    return absl::Now() + timeout.value_or(options_.timeout);
  }

  std::unique_ptr<grpc::ClientContext> NewContext(absl::Time deadline) const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(deadline));
    AddCallMetadata(options_, *context);
    return context;
  }

  // Runs `attempt(context)` (one RPC, returning its grpc::Status) until it succeeds, fails with
  // a code that is not retried, the policy's attempts are spent or the deadline is near.
  template <typename Attempt>
  absl::Status CallWithRetries(absl::string_view rpc, absl::Time deadline,
                               Attempt&& attempt) const {
    for (int n = 1;; ++n) {
      std::unique_ptr<grpc::ClientContext> context = NewContext(deadline);
      absl::Status status = FromGrpcStatus(rpc, attempt(context.get()));
      if (status.ok()) return status;
      const std::optional<absl::Duration> delay =
          NextRetryDelay(options_.retry, n, status, absl::Now(), deadline, Random());
      if (!delay.has_value()) return WithAttemptCount(status, n);
      absl::SleepFor(*delay);
    }
  }

  absl::StatusOr<ModelInfo> DescribeFromKServeMetadata(const std::string& model,
                                                       absl::Time deadline);

  // InferAsync's steps, each run by the callback of the step before.
  void StartAttempt(std::shared_ptr<AsyncInferCall> call) const;
  void AttemptDone(std::shared_ptr<AsyncInferCall> call, const grpc::Status& grpc_status) const;
  // Drops the call's context, then runs its `done`.
  static void Finish(AsyncInferCall& call, absl::StatusOr<InferResult> result);
  // Runs `call->done(result)` on a gRPC thread at `when` (at once when it has passed).
  static void FinishAt(absl::Time when, std::shared_ptr<AsyncInferCall> call,
                       absl::StatusOr<InferResult> result);

  const ConnectOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  const std::unique_ptr<moe::v1::MoEService::Stub> moe_;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

absl::Status ClientImpl::WaitForReady(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::DeadlineExceededError("no answer yet");
  while (true) {
    // One question at a time, no retries: the loop is the retry.
    std::unique_ptr<grpc::ClientContext> context =
        NewContext(std::min(deadline, absl::Now() + kReadyPollTimeout));
    inference::ServerReadyResponse response;
    last = FromGrpcStatus("ServerReady", kserve_->ServerReady(context.get(), {}, &response));
    if (last.ok() && response.ready()) return absl::OkStatus();
    if (last.ok()) last = absl::UnavailableError("ServerReady: ready is false");
    if (absl::Now() + kReadyPollInterval >= deadline) break;
    absl::SleepFor(kReadyPollInterval);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("WaitForReady: server ", options_.target, " is not ready after ",
                   absl::FormatDuration(timeout), "; last answer: ", last.message()));
}

absl::StatusOr<bool> ClientImpl::ServerLive() {
  inference::ServerLiveResponse response;
  MOE_RETURN_IF_ERROR(CallWithRetries("ServerLive", Deadline(), [&](grpc::ClientContext* context) {
    return kserve_->ServerLive(context, {}, &response);
  }));
  return response.live();
}

absl::StatusOr<bool> ClientImpl::ServerReady() {
  inference::ServerReadyResponse response;
  MOE_RETURN_IF_ERROR(CallWithRetries("ServerReady", Deadline(), [&](grpc::ClientContext* context) {
    return kserve_->ServerReady(context, {}, &response);
  }));
  return response.ready();
}

absl::StatusOr<bool> ClientImpl::ModelReady(const std::string& model) {
  inference::ModelReadyRequest request;
  request.set_name(model);
  inference::ModelReadyResponse response;
  MOE_RETURN_IF_ERROR(CallWithRetries("ModelReady", Deadline(), [&](grpc::ClientContext* context) {
    return kserve_->ModelReady(context, request, &response);
  }));
  return response.ready();
}

absl::StatusOr<HealthStatus> ClientImpl::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const absl::Status status = CallWithRetries(
      "Health.Check", Deadline(),
      [&](grpc::ClientContext* context) { return health_->Check(context, request, &response); });
  // The health service answers NOT_FOUND for a service it does not know.
  if (absl::IsNotFound(status)) return HealthStatus::kServiceUnknown;
  if (!status.ok()) return status;
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return HealthStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return HealthStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return HealthStatus::kServiceUnknown;
    default:
      return HealthStatus::kUnknown;
  }
}

absl::StatusOr<std::vector<ModelInfo>> ClientImpl::ListModels() {
  moe::v1::ListModelsResponse response;
  MOE_RETURN_IF_ERROR(CallWithRetries("ListModels", Deadline(), [&](grpc::ClientContext* context) {
    return moe_->ListModels(context, {}, &response);
  }));
  return std::vector<ModelInfo>(response.models().begin(), response.models().end());
}

absl::StatusOr<ModelInfo> ClientImpl::DescribeModel(const std::string& model) {
  const absl::Time deadline = Deadline();
  moe::v1::GetModelInfoRequest request;
  request.set_name(model);
  ModelInfo info;
  const absl::Status status = CallWithRetries(
      "GetModelInfo", deadline,
      [&](grpc::ClientContext* context) { return moe_->GetModelInfo(context, request, &info); });
  if (absl::IsUnimplemented(status)) return DescribeFromKServeMetadata(model, deadline);
  if (!status.ok()) return status;
  return info;
}

// A plain KServe server: name, inputs and outputs from ModelMetadata (the first input and
// output; the width is the last dimension), readiness from ModelReady.
absl::StatusOr<ModelInfo> ClientImpl::DescribeFromKServeMetadata(const std::string& model,
                                                                 absl::Time deadline) {
  inference::ModelMetadataRequest request;
  request.set_name(model);
  inference::ModelMetadataResponse metadata;
  MOE_RETURN_IF_ERROR(CallWithRetries("ModelMetadata", deadline, [&](grpc::ClientContext* context) {
    return kserve_->ModelMetadata(context, request, &metadata);
  }));
  inference::ModelReadyRequest ready_request;
  ready_request.set_name(model);
  inference::ModelReadyResponse ready;
  MOE_RETURN_IF_ERROR(CallWithRetries("ModelReady", deadline, [&](grpc::ClientContext* context) {
    return kserve_->ModelReady(context, ready_request, &ready);
  }));
  ModelInfo info;
  info.set_name(metadata.name().empty() ? model : metadata.name());
  info.set_ready(ready.ready());
  info.set_tensor_servable(true);
  if (metadata.inputs_size() > 0) {
    info.set_input_name(metadata.inputs(0).name());
    const auto& shape = metadata.inputs(0).shape();
    if (!shape.empty()) info.set_input_width(shape[shape.size() - 1]);
  }
  if (metadata.outputs_size() > 0) {
    info.set_output_name(metadata.outputs(0).name());
    const auto& shape = metadata.outputs(0).shape();
    if (!shape.empty()) info.set_output_width(shape[shape.size() - 1]);
  }
  return info;
}

absl::StatusOr<InferResult> ClientImpl::Infer(const std::string& model,
                                              const std::vector<InferInput>& inputs,
                                              const InferOptions& options) {
  absl::StatusOr<inference::ModelInferRequest> request = EncodeInferRequest(model, inputs, options);
  if (!request.ok()) return WithRpcName(kModelInfer, request.status());
  inference::ModelInferResponse response;
  MOE_RETURN_IF_ERROR(
      CallWithRetries(kModelInfer, Deadline(options.timeout), [&](grpc::ClientContext* context) {
        return kserve_->ModelInfer(context, *request, &response);
      }));
  absl::StatusOr<InferResult> result = DecodeInferResponse(response);
  if (!result.ok()) return WithRpcName(kModelInfer, result.status());
  return result;
}

absl::StatusOr<GenerateResult> ClientImpl::Generate(const std::string& model,
                                                    const std::vector<int32_t>& prompt_token_ids,
                                                    const GenerateOptions& options,
                                                    GenerateCallback on_chunk) {
  absl::StatusOr<moe::v1::GenerateRequest> request =
      EncodeGenerateRequest(model, prompt_token_ids, options);
  if (!request.ok()) return WithRpcName(kGenerate, request.status());
  const absl::Time start = absl::Now();
  const absl::Time deadline = Deadline(options.timeout);
  for (int attempt = 1;; ++attempt) {
    GenerateResult result;
    std::unique_ptr<grpc::ClientContext> context = NewContext(deadline);
    std::unique_ptr<grpc::ClientReader<moe::v1::GenerateResponse>> reader =
        moe_->Generate(context.get(), *request);
    moe::v1::GenerateResponse response;
    GenerateChunk chunk;
    bool stopped = false;    // by the caller
    absl::Status malformed;  // a message that does not hold together
    while (reader->Read(&response)) {
      const absl::Time now = absl::Now();
      malformed = AddGenerateResponse(response, &chunk, &result);
      if (!malformed.ok()) break;
      if (chunk.token_ids.empty() && chunk.text.empty()) continue;
      if (result.time_to_first_token == absl::ZeroDuration() && !chunk.token_ids.empty()) {
        result.time_to_first_token = now - start;
      }
      if (!on_chunk(chunk)) {
        stopped = true;
        break;
      }
    }
    if (stopped || !malformed.ok()) {
      context->TryCancel();
      while (reader->Read(&response)) {  // Finish wants the stream read to its end
      }
    }
    const absl::Status status = FromGrpcStatus(kGenerate, reader->Finish());
    result.total_time = absl::Now() - start;
    if (stopped) {
      return absl::CancelledError(absl::StrCat("Generate: stopped by the caller after ",
                                               result.token_ids.size(), " tokens"));
    }
    if (!malformed.ok()) return WithRpcName(kGenerate, malformed);
    if (status.ok()) {
      if (result.finish_reason == FinishReason::kUnspecified) {
        result.completion_tokens = static_cast<int32_t>(result.token_ids.size());
      }
      return result;
    }
    // The caller has seen tokens: a second attempt could repeat or change them.
    if (result.messages > 0) return status;
    const std::optional<absl::Duration> delay =
        NextRetryDelay(options_.retry, attempt, status, absl::Now(), deadline, Random());
    if (!delay.has_value()) return WithAttemptCount(status, attempt);
    absl::SleepFor(*delay);
  }
}

void ClientImpl::InferAsync(const std::string& model, const std::vector<InferInput>& inputs,
                            const InferOptions& options,
                            absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done) {
  auto call = std::make_shared<AsyncInferCall>();
  call->deadline = Deadline(options.timeout);
  call->done = std::move(done);
  if (!call->done) call->done = [](absl::StatusOr<InferResult>) {};  // fire and forget
  absl::StatusOr<inference::ModelInferRequest> request = EncodeInferRequest(model, inputs, options);
  if (!request.ok()) {
    // Not in the caller's thread: `done` may take a lock the caller holds.
    FinishAt(absl::Now(), std::move(call), WithRpcName(kModelInfer, request.status()));
    return;
  }
  call->request = *std::move(request);
  StartAttempt(std::move(call));
}

void ClientImpl::StartAttempt(std::shared_ptr<AsyncInferCall> call) const {
  ++call->attempt;
  call->context = NewContext(call->deadline);
  call->response.Clear();
  AsyncInferCall& state = *call;
  kserve_->async()->ModelInfer(
      state.context.get(), &state.request, &state.response,
      [this, call = std::move(call)](grpc::Status status) { AttemptDone(call, status); });
}

void ClientImpl::AttemptDone(std::shared_ptr<AsyncInferCall> call,
                             const grpc::Status& grpc_status) const {
  const absl::Status status = FromGrpcStatus(kModelInfer, grpc_status);
  if (status.ok()) {
    absl::StatusOr<InferResult> result = DecodeInferResponse(call->response);
    Finish(*call, result.ok() ? std::move(result) : WithRpcName(kModelInfer, result.status()));
    return;
  }
  const absl::Time now = absl::Now();
  const std::optional<absl::Duration> delay =
      NextRetryDelay(options_.retry, call->attempt, status, now, call->deadline, Random());
  if (!delay.has_value()) {
    Finish(*call, WithAttemptCount(status, call->attempt));
    return;
  }
  // The alarm's callback owns the call until it runs; it moves the reference out so that the
  // alarm (which keeps its callback object) does not keep the call alive in a cycle. Replacing
  // the previous, fired alarm here is safe: grpc::Alarm's implementation is reference counted
  // and outlives a callback still returning on another thread.
  AsyncInferCall& state = *call;
  state.alarm = std::make_unique<grpc::Alarm>();
  state.alarm->Set(absl::ToChronoTime(now + *delay),
                   [this, call = std::move(call)](bool /*fired*/) mutable {
                     // A cancelled alarm (fired false) only happens when the alarm is destroyed,
                     // which the call itself does only after this callback has run.
                     StartAttempt(std::move(call));
                   });
}

void ClientImpl::Finish(AsyncInferCall& call, absl::StatusOr<InferResult> result) {
  // The context holds a reference to the channel. Once `done` has run the caller may destroy the
  // client, and the channel must then go in the caller's thread: destroyed here, on the gRPC
  // thread running this callback, it would join that very thread.
  call.context.reset();
  call.done(std::move(result));
}

void ClientImpl::FinishAt(absl::Time when, std::shared_ptr<AsyncInferCall> call,
                          absl::StatusOr<InferResult> result) {
  AsyncInferCall& state = *call;
  state.alarm = std::make_unique<grpc::Alarm>();
  // std::function needs a copyable callable: the result travels in a shared_ptr.
  auto shared_result = std::make_shared<absl::StatusOr<InferResult>>(std::move(result));
  state.alarm->Set(absl::ToChronoTime(when),
                   [call = std::move(call), shared_result](bool /*fired*/) mutable {
                     std::shared_ptr<AsyncInferCall> owned = std::move(call);
                     owned->done(std::move(*shared_result));
                   });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ConnectOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options);
  if (!channel.ok()) return WithRpcName("Connect", channel.status());
  return std::unique_ptr<Client>(std::make_unique<ClientImpl>(options, *std::move(channel)));
}

const OutputTensor* InferResult::Find(const std::string& name) const {
  for (const OutputTensor& output : outputs) {
    if (output.name == name) return &output;
  }
  return nullptr;
}

std::string_view HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kUnknown:
      return "UNKNOWN";
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kUnspecified:
      return "unspecified";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
  }
  return "unspecified";
}

}  // namespace moe::client
