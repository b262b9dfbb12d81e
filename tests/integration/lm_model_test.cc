// A decoder language model (the Mixtral fixture) is loaded, listed and described, but the tensor
// API refuses it with FAILED_PRECONDITION saying why, while a tensor model beside it serves.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/moe_service.grpc.pb.h"
#include "tests/integration/integration_util.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kLm[] = "mix";

class LmModelTest : public SharedServerTest<LmModelTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = DigitsModelFlag();
    args.push_back("--model");
    args.push_back(absl::StrCat(kLm, "=", SourceDir(), "/tests/fixtures/mixtral-tiny-bf16"));
    return args;
  }

 protected:
  moe::v1::ModelInfo Info() {
    auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
    grpc::ClientContext context;
    moe::v1::GetModelInfoRequest request;
    request.set_name(kLm);
    moe::v1::ModelInfo info;
    EXPECT_THAT(moe_stub->GetModelInfo(&context, request, &info), GrpcOk());
    return info;
  }
};

TEST_F(LmModelTest, ModelInferIsRefusedWithFailedPrecondition) {
  const std::vector<float> values(64, 0.5f);
  inference::ModelInferResponse response;
  const grpc::Status status = Infer(stub(), MakeInferRequest(kLm, values, 1, 64), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(status);
  EXPECT_THAT(status.error_message(), Not(IsEmpty()));
  // The reason the server gives is the one GetModelInfo gives (an empty reason would match any
  // message: check it says something first).
  const std::string reason = Info().not_servable_reason();
  ASSERT_THAT(reason, Not(IsEmpty()));
  EXPECT_THAT(reason, HasSubstr("language model"));
  EXPECT_THAT(status.error_message(), HasSubstr(reason));
}

TEST_F(LmModelTest, ListedAndDescribedAsNotTensorServable) {
  auto moe_stub = moe::v1::MoEService::NewStub(server().channel());
  grpc::ClientContext context;
  moe::v1::ListModelsResponse models;
  ASSERT_THAT(moe_stub->ListModels(&context, {}, &models), GrpcOk());
  ASSERT_THAT(models.models(), SizeIs(2));
  EXPECT_EQ(models.models(0).name(), kDigits);
  EXPECT_EQ(models.models(1).name(), kLm);

  // tests/fixtures/mixtral-tiny-bf16/config.json
  const moe::v1::ModelInfo info = Info();
  EXPECT_EQ(info.name(), kLm);
  EXPECT_EQ(info.architecture(), "MixtralForCausalLM");
  EXPECT_EQ(info.family(), "mixtral");
  EXPECT_FALSE(info.tensor_servable());
  EXPECT_THAT(info.not_servable_reason(), Not(IsEmpty()));
  EXPECT_EQ(info.num_layers(), 2);
  EXPECT_EQ(info.num_moe_layers(), 2);
  EXPECT_EQ(info.num_experts(), 8);
  EXPECT_EQ(info.top_k(), 2);
  EXPECT_EQ(info.hidden_size(), 64);
  EXPECT_EQ(info.expert_ffn_size(), 96);
  EXPECT_EQ(info.weight_dtype(), "BF16");
}

TEST_F(LmModelTest, ModelMetadataAnswers) {
  grpc::ClientContext context;
  inference::ModelMetadataRequest request;
  request.set_name(kLm);
  inference::ModelMetadataResponse response;
  ASSERT_THAT(stub().ModelMetadata(&context, request, &response), GrpcOk());
  EXPECT_EQ(response.name(), kLm);
}

TEST_F(LmModelTest, TensorModelBesideItStillServes) {
  const std::vector<float> values(kDigitsWidth, 0.5f);
  inference::ModelInferResponse response;
  EXPECT_THAT(Infer(stub(), MakeInferRequest(kDigits, values, 1, kDigitsWidth), &response),
              GrpcOk());
}

}  // namespace
}  // namespace moe::integration
