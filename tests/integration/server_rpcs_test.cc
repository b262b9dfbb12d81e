// Every RPC moe-server offers, called on the real binary: KServe v2
// (inference.GRPCInferenceService), moe.v1.MoEService, grpc.health.v1.Health and server
// reflection. One server serves the built-in model alone (no --model), another the built-in
// model's checkpoint beside the synthetic one.
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "moe/v1/moe_service.grpc.pb.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Ge;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

// The built-in model alone: the server as a fresh machine runs it.
class DefaultServerTest : public SharedServerTest<DefaultServerTest> {
 public:
  static std::vector<std::string> ServerArgs() { return {}; }
};

// The built-in model's checkpoint and the synthetic model.
class TwoModelServerTest : public SharedServerTest<TwoModelServerTest> {
 public:
  static std::vector<std::string> ServerArgs() { return DigitsAndSyntheticFlags(); }
};

// --- KServe health and metadata ---

TEST_F(DefaultServerTest, ServerLiveIsTrue) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerLiveResponse response;
  ASSERT_THAT(stub().ServerLive(&context, {}, &response), GrpcOk());
  EXPECT_TRUE(response.live());
}

TEST_F(DefaultServerTest, ServerReadyIsTrue) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerReadyResponse response;
  ASSERT_THAT(stub().ServerReady(&context, {}, &response), GrpcOk());
  EXPECT_TRUE(response.ready());
}

TEST_F(DefaultServerTest, ServerMetadataNamesMoeServeAndItsVersion) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerMetadataResponse response;
  ASSERT_THAT(stub().ServerMetadata(&context, {}, &response), GrpcOk());
  EXPECT_EQ(response.name(), "moe-serve");
  EXPECT_THAT(response.version(), Not(IsEmpty()));
  for (const std::string& extension : response.extensions()) {
    EXPECT_THAT(extension, Not(IsEmpty()));
  }
}

TEST_F(DefaultServerTest, ServesTheBuiltInDigitsModelWithoutFlags) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelReadyRequest request;
  request.set_name(kDigits);
  inference::ModelReadyResponse response;
  ASSERT_THAT(stub().ModelReady(&context, request, &response), GrpcOk());
  EXPECT_TRUE(response.ready());

  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext list_context;
  SetDeadline(&list_context);
  moe::v1::ListModelsResponse models;
  ASSERT_THAT(moe_stub->ListModels(&list_context, {}, &models), GrpcOk());
  ASSERT_THAT(models.models(), SizeIs(1));
  EXPECT_EQ(models.models(0).name(), kDigits);
}

TEST_F(TwoModelServerTest, ModelReadyIsTrueForEveryServedModel) {
  for (const char* name : {kDigits, kSynthetic}) {
    grpc::ClientContext context;
    SetDeadline(&context);
    inference::ModelReadyRequest request;
    request.set_name(name);
    inference::ModelReadyResponse response;
    ASSERT_THAT(stub().ModelReady(&context, request, &response), GrpcOk()) << name;
    EXPECT_TRUE(response.ready()) << name;
  }
}

TEST_F(TwoModelServerTest, ModelReadyOfUnknownModelIsNotFound) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelReadyRequest request;
  request.set_name("no-such-model");
  inference::ModelReadyResponse response;
  EXPECT_THAT(stub().ModelReady(&context, request, &response),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("no-such-model")));
}

void ExpectTensor(const inference::ModelMetadataResponse::TensorMetadata& tensor,
                  const std::string& name, const std::string& datatype,
                  const std::vector<int64_t>& shape) {
  EXPECT_EQ(tensor.name(), name);
  EXPECT_EQ(tensor.datatype(), datatype) << name;
  EXPECT_THAT(tensor.shape(), ElementsAreArray(shape)) << name;
}

// Inputs and outputs as the contract gives them; the routing outputs are optional in metadata.
void ExpectModelMetadata(const inference::ModelMetadataResponse& response, const std::string& name,
                         int64_t width, int64_t outputs, int64_t moe_layers, int top_k) {
  EXPECT_EQ(response.name(), name);
  ASSERT_THAT(response.inputs(), SizeIs(1));
  ExpectTensor(response.inputs(0), "input", "FP32", {-1, width});
  ASSERT_THAT(response.outputs(), Not(IsEmpty()));
  ExpectTensor(response.outputs(0), "logits", "FP32", {-1, outputs});
  for (int i = 1; i < response.outputs_size(); ++i) {
    const auto& tensor = response.outputs(i);
    if (tensor.name() == "routing_expert_ids") {
      ExpectTensor(tensor, "routing_expert_ids", "INT32", {-1, moe_layers, top_k});
    } else {
      ExpectTensor(tensor, "routing_weights", "FP32", {-1, moe_layers, top_k});
    }
  }
}

TEST_F(TwoModelServerTest, ModelMetadataDescribesInputsAndOutputs) {
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    inference::ModelMetadataRequest request;
    request.set_name(kDigits);
    inference::ModelMetadataResponse response;
    ASSERT_THAT(stub().ModelMetadata(&context, request, &response), GrpcOk());
    ExpectModelMetadata(response, kDigits, kDigitsWidth, kDigitsOutputs, kDigitsMoELayers,
                        kDigitsTopK);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    inference::ModelMetadataRequest request;
    request.set_name(kSynthetic);
    inference::ModelMetadataResponse response;
    ASSERT_THAT(stub().ModelMetadata(&context, request, &response), GrpcOk());
    ExpectModelMetadata(response, kSynthetic, kSyntheticWidth, kSyntheticOutputs,
                        kSyntheticMoELayers, kSyntheticTopK);
  }
}

TEST_F(TwoModelServerTest, ModelMetadataOfUnknownModelIsNotFound) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelMetadataRequest request;
  request.set_name("no-such-model");
  inference::ModelMetadataResponse response;
  EXPECT_THAT(stub().ModelMetadata(&context, request, &response),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("no-such-model")));
}

// --- KServe inference ---

TEST_F(TwoModelServerTest, ModelInferAnswersEachModelWithItsOutputShapeAndEchoesTheId) {
  std::mt19937_64 rng(testing::FreshSeed());
  struct Case {
    const char* model;
    int64_t width, outputs, rows;
  };
  for (const Case& c : {Case{kDigits, kDigitsWidth, kDigitsOutputs, 3},
                        Case{kSynthetic, kSyntheticWidth, kSyntheticOutputs, 5}}) {
    SCOPED_TRACE(c.model);
    const auto values = UniformRows(rng, c.rows, c.width);
    const auto request = MakeInferRequest(c.model, values, c.rows, c.width, {.id = "request-17"});
    inference::ModelInferResponse response;
    ASSERT_THAT(Infer(stub(), request, &response), GrpcOk());
    EXPECT_EQ(response.model_name(), c.model);
    EXPECT_EQ(response.id(), "request-17");
    ASSERT_THAT(response.outputs(), SizeIs(1));
    EXPECT_EQ(response.outputs(0).name(), "logits");
    EXPECT_EQ(response.outputs(0).datatype(), "FP32");
    EXPECT_THAT(response.outputs(0).shape(), ElementsAre(c.rows, c.outputs));
    auto logits = OutputFloats(response, "logits");
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (float v : *logits) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST_F(TwoModelServerTest, ModelInferReportsQueueComputeAndBatchRows) {
  std::mt19937_64 rng(testing::FreshSeed());
  const auto values = UniformRows(rng, 4, kDigitsWidth);
  inference::ModelInferResponse response;
  ASSERT_THAT(Infer(stub(), MakeInferRequest(kDigits, values, 4, kDigitsWidth), &response),
              GrpcOk());
  const auto queue_us = Int64Parameter(response, "queue_us");
  const auto compute_us = Int64Parameter(response, "compute_us");
  const auto batch_rows = Int64Parameter(response, "batch_rows");
  ASSERT_TRUE(queue_us.has_value()) << response.ShortDebugString();
  ASSERT_TRUE(compute_us.has_value()) << response.ShortDebugString();
  ASSERT_TRUE(batch_rows.has_value()) << response.ShortDebugString();
  EXPECT_GE(*queue_us, 0);
  EXPECT_GE(*compute_us, 0);
  // Alone on the server, the request is its own batch.
  EXPECT_EQ(*batch_rows, 4);
}

TEST_F(TwoModelServerTest, ModelInferOfUnknownModelIsNotFound) {
  const std::vector<float> values(kDigitsWidth, 0.5f);
  inference::ModelInferResponse response;
  EXPECT_THAT(Infer(stub(), MakeInferRequest("no-such-model", values, 1, kDigitsWidth), &response),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("no-such-model")));
}

// --- moe.v1 ---

TEST_F(TwoModelServerTest, ListModelsNamesEveryModelInNameOrder) {
  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext context;
  SetDeadline(&context);
  moe::v1::ListModelsResponse response;
  ASSERT_THAT(moe_stub->ListModels(&context, {}, &response), GrpcOk());
  ASSERT_THAT(response.models(), SizeIs(2));
  EXPECT_EQ(response.models(0).name(), kDigits);
  EXPECT_EQ(response.models(1).name(), kSynthetic);
  for (const auto& model : response.models()) {
    EXPECT_TRUE(model.ready()) << model.name();
    EXPECT_TRUE(model.tensor_servable()) << model.name();
  }
}

TEST_F(TwoModelServerTest, GetModelInfoDescribesTheBuiltInModel) {
  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext context;
  SetDeadline(&context);
  moe::v1::GetModelInfoRequest request;
  request.set_name(kDigits);
  moe::v1::ModelInfo info;
  ASSERT_THAT(moe_stub->GetModelInfo(&context, request, &info), GrpcOk());
  // models/builtin/config.json
  EXPECT_EQ(info.name(), kDigits);
  EXPECT_EQ(info.architecture(), "MoEMLP");
  EXPECT_EQ(info.family(), "moe_mlp");
  EXPECT_TRUE(info.ready());
  EXPECT_TRUE(info.tensor_servable());
  EXPECT_THAT(info.not_servable_reason(), IsEmpty());
  EXPECT_EQ(info.num_layers(), 2);
  EXPECT_EQ(info.num_moe_layers(), kDigitsMoELayers);
  EXPECT_EQ(info.num_experts(), kDigitsExperts);
  EXPECT_EQ(info.top_k(), kDigitsTopK);
  EXPECT_EQ(info.hidden_size(), 64);
  EXPECT_EQ(info.expert_ffn_size(), 64);
  EXPECT_EQ(info.activation(), "swiglu");
  EXPECT_EQ(info.weight_dtype(), "F32");
  EXPECT_GT(info.weight_bytes(), 0u);
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_THAT(info.device(), HasSubstr("cpu"));
  EXPECT_EQ(info.input_name(), "input");
  EXPECT_EQ(info.input_width(), kDigitsWidth);
  EXPECT_EQ(info.output_name(), "logits");
  EXPECT_EQ(info.output_width(), kDigitsOutputs);
  EXPECT_THAT(info.output_labels(), ElementsAre("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"));
}

TEST_F(TwoModelServerTest, GetModelInfoDescribesTheSyntheticModel) {
  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext context;
  SetDeadline(&context);
  moe::v1::GetModelInfoRequest request;
  request.set_name(kSynthetic);
  moe::v1::ModelInfo info;
  ASSERT_THAT(moe_stub->GetModelInfo(&context, request, &info), GrpcOk());
  EXPECT_EQ(info.architecture(), "MoEMLP");
  EXPECT_EQ(info.num_moe_layers(), kSyntheticMoELayers);
  EXPECT_EQ(info.num_experts(), kSyntheticExperts);
  EXPECT_EQ(info.top_k(), kSyntheticTopK);
  EXPECT_EQ(info.hidden_size(), kSyntheticHidden);
  EXPECT_EQ(info.expert_ffn_size(), 1024);
  EXPECT_EQ(info.input_width(), kSyntheticWidth);
  EXPECT_EQ(info.output_width(), kSyntheticOutputs);
  // 2 blocks x 8 experts x (2 x 1024 x 512 + 512 x 1024) float32 weights at least.
  EXPECT_GE(info.weight_bytes(), 2ull * 8 * 3 * 1024 * 512 * 4);
}

TEST_F(TwoModelServerTest, GetModelInfoOfUnknownModelIsNotFound) {
  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext context;
  SetDeadline(&context);
  moe::v1::GetModelInfoRequest request;
  request.set_name("no-such-model");
  moe::v1::ModelInfo info;
  EXPECT_THAT(moe_stub->GetModelInfo(&context, request, &info),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("no-such-model")));
}

// --- grpc.health.v1 ---

HealthCheckResponse::ServingStatus CheckHealth(testing::ServerProcess& server,
                                               const std::string& service, grpc::Status* status) {
  auto health = grpc::health::v1::Health::NewStub(server.channel());
  grpc::ClientContext context;
  SetDeadline(&context);
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  *status = health->Check(&context, request, &response);
  return response.status();
}

TEST_F(TwoModelServerTest, HealthCheckServesTheServerAndEachModel) {
  for (const std::string service : {"", kDigits, kSynthetic}) {
    grpc::Status status;
    EXPECT_EQ(CheckHealth(server(), service, &status), HealthCheckResponse::SERVING)
        << "service '" << service << "'";
    EXPECT_THAT(status, GrpcOk()) << "service '" << service << "'";
  }
}

TEST_F(TwoModelServerTest, HealthCheckOfUnknownModelIsNotFound) {
  grpc::Status status;
  CheckHealth(server(), "no-such-model", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(status);
}

// --- server reflection ---

// A protobuf message's length-delimited fields with `number`, read without its .proto (the
// reflection protos are not installed with gRPC on Debian).
std::vector<std::string> LengthDelimitedFields(const std::string& bytes, int number) {
  google::protobuf::UnknownFieldSet fields;
  std::vector<std::string> values;
  if (!fields.ParseFromString(bytes)) return values;
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& field = fields.field(i);
    if (field.number() == number &&
        field.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      values.push_back(field.length_delimited());
    }
  }
  return values;
}

TEST_F(TwoModelServerTest, ReflectionListsEveryService) {
  // grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with
  // ServerReflectionRequest{list_services (field 7): "*"}.
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING);
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          server().channel().get(), method, &context));
  const std::string request_bytes("\x3a\x01*", 3);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->WritesDone());
  grpc::ByteBuffer reply;
  ASSERT_TRUE(stream->Read(&reply)) << Describe(stream->Finish());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string reply_bytes;
  for (const grpc::Slice& s : slices) {
    reply_bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  while (stream->Read(&reply)) {
  }
  EXPECT_THAT(stream->Finish(), GrpcOk());

  // ServerReflectionResponse.list_services_response (6) -> ListServiceResponse.service (1)
  // -> ServiceResponse.name (1).
  std::vector<std::string> services;
  for (const std::string& list : LengthDelimitedFields(reply_bytes, 6)) {
    for (const std::string& service : LengthDelimitedFields(list, 1)) {
      for (const std::string& name : LengthDelimitedFields(service, 1)) services.push_back(name);
    }
  }
  EXPECT_THAT(services, Contains("inference.GRPCInferenceService"));
  EXPECT_THAT(services, Contains("moe.v1.MoEService"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));
}

}  // namespace
}  // namespace moe::integration
