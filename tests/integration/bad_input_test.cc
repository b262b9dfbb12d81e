// Every malformed ModelInfer request gets its own gRPC status with a message naming the
// problem, and never reaches the model: the server answers the next good request as before.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"

namespace moe::integration {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr int64_t kMaxBatchTokens = 8;
// Small enough that one request of kMaxBatchTokens rows passes but 256 rows do not.
constexpr int kMaxMessageBytes = 16 * 1024;

class BadInputTest : public SharedServerTest<BadInputTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    return {"--max-batch-tokens", std::to_string(kMaxBatchTokens), "--max-message-bytes",
            std::to_string(kMaxMessageBytes)};
  }

 protected:
  // Two good rows of the built-in model, typed FP32.
  static ModelInferRequest GoodRequest() {
    return MakeInferRequest(kDigits, std::vector<float>(2 * kDigitsWidth, 0.25f), 2, kDigitsWidth);
  }

  grpc::Status Send(const ModelInferRequest& request) {
    ModelInferResponse response;
    return Infer(stub(), request, &response);
  }

  void TearDown() override {
    // Whatever was refused, the server still answers a good request.
    ModelInferResponse response;
    EXPECT_THAT(Infer(stub(), GoodRequest(), &response), GrpcOk())
        << "the server stopped answering after the bad request";
    SharedServerTest::TearDown();
  }
};

TEST_F(BadInputTest, GoodRequestPasses) { EXPECT_THAT(Send(GoodRequest()), GrpcOk()); }

// Finite but huge values overflow float32 inside the model: refused, not answered with NaN.
TEST_F(BadInputTest, InputsThatOverflowTheModelAreInvalidNotNaN) {
  std::vector<float> huge(2 * kDigitsWidth, 3.4e38f);  // just below FLT_MAX
  EXPECT_THAT(Send(MakeInferRequest(kDigits, huge, 2, kDigitsWidth)),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("non-finite output")));
}

TEST_F(BadInputTest, UnknownModelIsNotFound) {
  ModelInferRequest request = GoodRequest();
  request.set_model_name("no-such-model");
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("no-such-model")));
}

TEST_F(BadInputTest, WrongInputNameIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->set_name("pixels");
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("pixels")));
}

TEST_F(BadInputTest, UnsupportedDatatypeIsInvalid) {
  ModelInferRequest request = GoodRequest();
  auto* input = request.mutable_inputs(0);
  input->set_datatype("INT32");
  input->clear_contents();
  for (int i = 0; i < 2 * kDigitsWidth; ++i) input->mutable_contents()->add_int_contents(1);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("INT32")));
}

TEST_F(BadInputTest, Fp16InTypedContentsIsInvalid) {
  // FP16 has no typed contents field; it must travel raw.
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->set_datatype("FP16");
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("raw")));
}

TEST_F(BadInputTest, OneDimensionalShapeIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->clear_shape();
  request.mutable_inputs(0)->add_shape(2 * kDigitsWidth);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("shape")));
}

TEST_F(BadInputTest, WrongRowWidthIsInvalid) {
  const int64_t width = kDigitsWidth - 1;
  const auto request = MakeInferRequest(kDigits, std::vector<float>(2 * width, 0.25f), 2, width);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                                          AllOf(HasSubstr("shape"), HasSubstr("63"))));
}

TEST_F(BadInputTest, NegativeDimensionIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->set_shape(0, -2);
  EXPECT_THAT(Send(request),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("negative")));
}

TEST_F(BadInputTest, HugeRowCountIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->set_shape(0, std::numeric_limits<int64_t>::max());
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("rows")));
}

TEST_F(BadInputTest, DimensionsWhoseProductOverflowsAreInvalid) {
  // 2^32 x 2^32 elements overflow int64 once multiplied by the element size.
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->set_shape(0, int64_t{1} << 32);
  request.mutable_inputs(0)->set_shape(1, int64_t{1} << 32);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("shape")));
}

TEST_F(BadInputTest, RawByteCountMismatchIsInvalid) {
  std::vector<float> values(2 * kDigitsWidth, 0.25f);
  ModelInferRequest request = MakeInferRequest(kDigits, values, 2, kDigitsWidth, {.raw = true});
  request.mutable_raw_input_contents(0)->resize(2 * kDigitsWidth * sizeof(float) - 4);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                                          AllOf(HasSubstr("bytes"), HasSubstr("508"))));
}

TEST_F(BadInputTest, TypedValueCountMismatchIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("127")));
}

TEST_F(BadInputTest, TypedAndRawContentsTogetherAreInvalid) {
  ModelInferRequest request = GoodRequest();
  request.add_raw_input_contents(std::string(2 * kDigitsWidth * sizeof(float), '\0'));
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("raw")));
}

TEST_F(BadInputTest, EmptyTensorIsInvalid) {
  const auto request = MakeInferRequest(kDigits, {}, 0, kDigitsWidth);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("empty")));
}

TEST_F(BadInputTest, MissingInputIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.clear_inputs();
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("input")));
}

TEST_F(BadInputTest, ExtraInputIsInvalid) {
  ModelInferRequest request = GoodRequest();
  auto* extra = request.add_inputs();
  *extra = request.inputs(0);
  extra->set_name("extra");
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("extra")));
}

TEST_F(BadInputTest, InputGivenTwiceIsInvalid) {
  ModelInferRequest request = GoodRequest();
  *request.add_inputs() = request.inputs(0);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("input")));
}

TEST_F(BadInputTest, NaNValueIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->mutable_contents()->set_fp32_contents(
      kDigitsWidth + 5, std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("NaN")));
}

TEST_F(BadInputTest, InfiniteValueIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.mutable_inputs(0)->mutable_contents()->set_fp32_contents(
      3, -std::numeric_limits<float>::infinity());
  EXPECT_THAT(Send(request),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                           AnyOf(HasSubstr("infinite"), HasSubstr("Inf"), HasSubstr("inf"))));
}

TEST_F(BadInputTest, RawNaNInHalfPrecisionIsInvalid) {
  std::vector<float> values(2 * kDigitsWidth, 0.25f);
  values[7] = std::numeric_limits<float>::quiet_NaN();
  const auto request = MakeInferRequest(kDigits, values, 2, kDigitsWidth, {.datatype = "BF16"});
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("NaN")));
}

TEST_F(BadInputTest, MoreRowsThanMaxBatchTokensIsInvalid) {
  const int64_t rows = kMaxBatchTokens + 1;
  const auto request =
      MakeInferRequest(kDigits, std::vector<float>(rows * kDigitsWidth, 0.25f), rows, kDigitsWidth);
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                                          AllOf(HasSubstr("rows"), HasSubstr("9"))));
}

TEST_F(BadInputTest, MaxBatchTokensRowsPass) {
  const auto request =
      MakeInferRequest(kDigits, std::vector<float>(kMaxBatchTokens * kDigitsWidth, 0.25f),
                       kMaxBatchTokens, kDigitsWidth);
  EXPECT_THAT(Send(request), GrpcOk());
}

TEST_F(BadInputTest, UnknownRequestedOutputIsInvalid) {
  ModelInferRequest request = GoodRequest();
  request.add_outputs()->set_name("probabilities");
  EXPECT_THAT(Send(request),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("probabilities")));
}

TEST_F(BadInputTest, TooManyRequestedOutputsAreInvalid) {
  ModelInferRequest request = GoodRequest();
  for (const char* name : {"logits", "routing_expert_ids", "routing_weights", "logits"}) {
    request.add_outputs()->set_name(name);
  }
  EXPECT_THAT(Send(request), GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("output")));
}

TEST_F(BadInputTest, RoutingParameterOfWrongTypeIsInvalid) {
  ModelInferRequest request = GoodRequest();
  (*request.mutable_parameters())["routing"].set_string_param("yes");
  EXPECT_THAT(Send(request),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("routing")));
}

TEST_F(BadInputTest, NegativeTimeoutParameterIsInvalid) {
  ModelInferRequest request = GoodRequest();
  (*request.mutable_parameters())["timeout"].set_int64_param(-5);
  EXPECT_THAT(Send(request),
              GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("timeout")));
}

TEST_F(BadInputTest, MessageAboveMaxMessageBytesIsResourceExhausted) {
  // 64 rows of 64 floats is 16 KiB of raw data alone, over --max-message-bytes; the server's
  // own gRPC limit refuses it before it is parsed (the rows limit would refuse it later).
  const int64_t rows = 64;
  const auto request = MakeInferRequest(kDigits, std::vector<float>(rows * kDigitsWidth, 0.25f),
                                        rows, kDigitsWidth, {.raw = true});
  ASSERT_GT(request.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  const grpc::Status status = Send(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(status);
}

}  // namespace
}  // namespace moe::integration
