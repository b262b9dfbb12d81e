// The KServe service in-process on a loopback port, over a model whose batches a test can hold
// or fail: the paths that need control over timing (cancellation, drain, engine failure, object
// lifetimes) without a real model.
#include "server/api/kserve_service.h"

#include <grpcpp/create_channel.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/api/grpc_server.h"
#include "server/api/model_registry.h"
#include "tests/testing/fake_model.h"

namespace moe::api {
namespace {

using ::moe::testing::FakeModel;
using ::testing::HasSubstr;

class KServeServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { live_before_ = scheduler::InferenceRequest::LiveCount(); }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Now() + absl::Seconds(5));
    server_.reset();
    registry_.reset();
    EXPECT_EQ(scheduler::InferenceRequest::LiveCount(), live_before_)
        << "every request object must be released whatever its outcome";
  }

  void Start(scheduler::SchedulerOptions options, int64_t max_message_bytes = 1 << 20) {
    registry_ = std::make_unique<ModelRegistry>();
    ASSERT_TRUE(registry_->Declare("fake").ok());
    auto model = std::make_unique<FakeModel>();
    model_ = model.get();
    auto scheduler = scheduler::BatchScheduler::Create(std::move(model), options);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    ASSERT_TRUE(registry_->SetLoaded("fake", std::move(*scheduler)).ok());
    auto server = GrpcServer::Start(
        {.address = "127.0.0.1:0", .max_message_bytes = max_message_bytes}, registry_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
  }

  static inference::ModelInferRequest MakeRequest(int64_t rows, float tag) {
    inference::ModelInferRequest request;
    request.set_model_name("fake");
    request.set_id(absl::StrCat("req-", tag));
    auto* input = request.add_inputs();
    input->set_name("input");
    input->set_datatype("FP32");
    input->add_shape(rows);
    input->add_shape(FakeModel::kInputWidth);
    for (int64_t i = 0; i < rows * FakeModel::kInputWidth; ++i) {
      input->mutable_contents()->add_fp32_contents(tag + 0.5f * i);
    }
    return request;
  }

  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response,
                     absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->ModelInfer(&context, request, response);
  }

  // Starts a call on another thread; `done` fires with its status.
  struct PendingCall {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    grpc::Status status;
    absl::Notification done;
  };
  void StartCall(PendingCall* call, const inference::ModelInferRequest& request) {
    stub_->async()->ModelInfer(&call->context, &request, &call->response,
                               [call](grpc::Status status) {
                                 call->status = std::move(status);
                                 call->done.Notify();
                               });
  }

  void AwaitQueued(int64_t n) {
    auto scheduler = registry_->FindLoaded("fake");
    ASSERT_TRUE(scheduler.ok());
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    while ((*scheduler)->queued_requests() != n && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_EQ((*scheduler)->queued_requests(), n);
  }

  int64_t live_before_ = 0;
  FakeModel* model_ = nullptr;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(KServeServiceTest, AnswersWithTheRequestsOwnRowsAndEchoesTheId) {
  Start({});
  const auto request = MakeRequest(3, 7);
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(request, &response).ok());
  EXPECT_EQ(response.id(), "req-7");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "logits");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(3, FakeModel::kOutputWidth));
  const auto& values = response.outputs(0).contents().fp32_contents();
  const auto& in = request.inputs(0).contents().fp32_contents();
  for (int r = 0; r < 3; ++r) {
    const std::vector<float> expected = FakeModel::Expected(in.data() + r * FakeModel::kInputWidth);
    for (int c = 0; c < FakeModel::kOutputWidth; ++c) {
      EXPECT_EQ(values[r * FakeModel::kOutputWidth + c], expected[c]);
    }
  }
  EXPECT_TRUE(response.parameters().contains("queue_us"));
  EXPECT_EQ(response.parameters().at("batch_rows").int64_param(), 3);
}

TEST_F(KServeServiceTest, EngineFailureGivesInternalToThatBatchAndTheServerGoesOn) {
  Start({});
  model_->FailBatchNumber(1);
  inference::ModelInferResponse response;
  const grpc::Status failed = Infer(MakeRequest(1, 1), &response);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(failed.error_message(), HasSubstr("injected engine failure"));
  const grpc::Status ok = Infer(MakeRequest(1, 2), &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

TEST_F(KServeServiceTest, CancelledCallFreesItsQueuePlace) {
  Start({.max_batch_rows = 1, .max_queue_requests = 1});
  model_->Hold();
  PendingCall running, cancelled;
  const auto running_request = MakeRequest(1, 1);
  const auto cancelled_request = MakeRequest(1, 2);
  StartCall(&running, running_request);
  model_->AwaitBatchesStarted(1);
  StartCall(&cancelled, cancelled_request);
  AwaitQueued(1);
  cancelled.context.TryCancel();
  cancelled.done.WaitForNotification();
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED);
  AwaitQueued(0);  // the place is free again before the running batch ends
  PendingCall next;
  const auto next_request = MakeRequest(1, 3);
  StartCall(&next, next_request);
  AwaitQueued(1);
  model_->Release();
  running.done.WaitForNotification();
  next.done.WaitForNotification();
  EXPECT_TRUE(running.status.ok());
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_THAT(model_->seen_first_values(), ::testing::Not(::testing::Contains(2.0f)))
      << "the cancelled request was never computed";
}

TEST_F(KServeServiceTest, QueueFullGivesResourceExhausted) {
  Start({.max_batch_rows = 1, .max_queue_requests = 1});
  model_->Hold();
  PendingCall running, queued;
  const auto a = MakeRequest(1, 1), b = MakeRequest(1, 2);
  StartCall(&running, a);
  model_->AwaitBatchesStarted(1);
  StartCall(&queued, b);
  AwaitQueued(1);
  inference::ModelInferResponse response;
  const grpc::Status refused = Infer(MakeRequest(1, 3), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  model_->Release();
  running.done.WaitForNotification();
  queued.done.WaitForNotification();
  EXPECT_TRUE(queued.status.ok());
}

TEST_F(KServeServiceTest, DeadlineInTheQueueIsExceededAndNeverComputed) {
  Start({.max_batch_rows = 1});
  model_->Hold();
  PendingCall running;
  const auto a = MakeRequest(1, 1);
  StartCall(&running, a);
  model_->AwaitBatchesStarted(1);
  // The late call waits in the queue behind the held batch until its deadline passes.
  PendingCall late;
  const auto b = MakeRequest(1, 99);
  late.context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
  StartCall(&late, b);
  ASSERT_NO_FATAL_FAILURE(AwaitQueued(1));
  ASSERT_TRUE(late.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << late.status.error_message();
  // The server's deadline runs from the call's arrival, a little after the client's start:
  // wait until the call has left the queue (cancelled by gRPC at its deadline) before the
  // model may take another batch.
  ASSERT_NO_FATAL_FAILURE(AwaitQueued(0));
  model_->Release();
  running.done.WaitForNotification();
  EXPECT_TRUE(running.status.ok()) << running.status.error_message();
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(MakeRequest(1, 3), &response).ok());
  EXPECT_THAT(model_->seen_first_values(), ::testing::Not(::testing::Contains(99.0f)));
}

TEST_F(KServeServiceTest, TimeoutParameterExpiresQueuedWork) {
  Start({.max_batch_rows = 1});
  model_->Hold();
  PendingCall running, timed;
  const auto a = MakeRequest(1, 1);
  auto b = MakeRequest(1, 42);
  (*b.mutable_parameters())["timeout"].set_int64_param(10'000);  // 10 ms
  StartCall(&running, a);
  model_->AwaitBatchesStarted(1);
  StartCall(&timed, b);
  AwaitQueued(1);
  absl::SleepFor(absl::Milliseconds(30));
  model_->Release();
  timed.done.WaitForNotification();
  EXPECT_EQ(timed.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(timed.status.error_message(), HasSubstr("not computed"));
  running.done.WaitForNotification();
}

TEST_F(KServeServiceTest, DrainAnswersAcceptedRequestsAndRefusesNewOnes) {
  Start({.max_batch_rows = 1});
  model_->Hold();
  std::vector<PendingCall> calls(3);
  std::vector<inference::ModelInferRequest> requests;
  for (int i = 0; i < 3; ++i) requests.push_back(MakeRequest(1, 10 + i));
  for (int i = 0; i < 3; ++i) StartCall(&calls[i], requests[i]);
  model_->AwaitBatchesStarted(1);
  AwaitQueued(2);
  registry_->BeginDrain();
  server_->UpdateHealth();
  inference::ModelInferResponse response;
  const grpc::Status refused = Infer(MakeRequest(1, 50), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  inference::ServerReadyResponse ready;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->ServerReady(&context, {}, &ready).ok());
  EXPECT_FALSE(ready.ready());
  model_->Release();
  EXPECT_TRUE(registry_->FinishDrain(absl::Seconds(30)));
  for (auto& call : calls) {
    call.done.WaitForNotification();
    EXPECT_TRUE(call.status.ok()) << call.status.error_message();
  }
}

TEST_F(KServeServiceTest, ConcurrentClientsNeverGetEachOthersRows) {
  Start({.max_batch_rows = 64});
  constexpr int kClients = 16;
  constexpr int kCallsEach = 20;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < kCallsEach; ++i) {
        const float tag = 1000.0f * t + 10.0f * i;
        const int64_t rows = 1 + (t + i) % 4;
        const auto request = MakeRequest(rows, tag);
        inference::ModelInferResponse response;
        if (!Infer(request, &response).ok()) {
          ++mismatches;
          continue;
        }
        const auto& in = request.inputs(0).contents().fp32_contents();
        const auto& out = response.outputs(0).contents().fp32_contents();
        for (int64_t r = 0; r < rows; ++r) {
          const auto expected = FakeModel::Expected(in.data() + r * FakeModel::kInputWidth);
          for (int c = 0; c < FakeModel::kOutputWidth; ++c) {
            if (out[r * FakeModel::kOutputWidth + c] != expected[c]) ++mismatches;
          }
        }
      }
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(KServeServiceTest, RoutingComesBackTypedOrRawAsTheRequestCame) {
  Start({});
  auto request = MakeRequest(2, 5);
  (*request.mutable_parameters())["routing"].set_bool_param(true);
  inference::ModelInferResponse typed;
  ASSERT_TRUE(Infer(request, &typed).ok());
  ASSERT_EQ(typed.outputs_size(), 3);
  EXPECT_EQ(typed.outputs(1).name(), "routing_expert_ids");
  EXPECT_THAT(typed.outputs(1).shape(),
              ::testing::ElementsAre(2, FakeModel::kLayers, FakeModel::kTopK));
  const auto& in = request.inputs(0).contents().fp32_contents();
  EXPECT_EQ(typed.outputs(1).contents().int_contents(0),
            FakeModel::ExpectedExpert(in.data(), 0, 0));

  auto raw = request;
  std::string bytes(in.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), in.data(), bytes.size());
  raw.mutable_inputs(0)->clear_contents();
  raw.add_raw_input_contents(bytes);
  inference::ModelInferResponse raw_response;
  ASSERT_TRUE(Infer(raw, &raw_response).ok());
  ASSERT_EQ(raw_response.raw_output_contents_size(), 3);
  EXPECT_FALSE(raw_response.outputs(0).has_contents());
  std::vector<float> logits(2 * FakeModel::kOutputWidth);
  ASSERT_EQ(raw_response.raw_output_contents(0).size(), logits.size() * sizeof(float));
  std::memcpy(logits.data(), raw_response.raw_output_contents(0).data(),
              logits.size() * sizeof(float));
  EXPECT_EQ(logits[0], typed.outputs(0).contents().fp32_contents(0));
}

TEST_F(KServeServiceTest, MessageOneByteAboveTheLimitIsResourceExhausted) {
  constexpr int64_t kLimit = 4096;
  Start({}, kLimit);
  // Pads the request's id until its serialized size is exactly `size`.
  auto sized_request = [](size_t size) {
    auto request = MakeRequest(1, 1);
    request.set_id("");
    std::string id;
    while (request.ByteSizeLong() < size) {
      id.push_back('x');
      request.set_id(id);
    }
    return request;
  };
  inference::ModelInferResponse response;
  const auto at_limit = sized_request(kLimit);
  ASSERT_EQ(at_limit.ByteSizeLong(), static_cast<size_t>(kLimit));
  const grpc::Status accepted = Infer(at_limit, &response);
  EXPECT_TRUE(accepted.ok()) << accepted.error_message();
  const auto above = sized_request(kLimit + 1);
  ASSERT_EQ(above.ByteSizeLong(), static_cast<size_t>(kLimit + 1));
  const grpc::Status refused = Infer(above, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_TRUE(Infer(MakeRequest(1, 2), &response).ok()) << "the server keeps serving";
}

}  // namespace
}  // namespace moe::api
