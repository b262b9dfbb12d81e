// InferInput -> ModelInferRequest and ModelInferResponse -> InferResult: raw encodings byte for
// byte against hand-written bytes, typed contents, parameters, local validation, and decoding of
// raw and typed FP32/INT32 outputs, refusing responses that contradict their shapes.
#include "client/src/tensor_codec.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::client {
namespace {

using ::moe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

InferInput Input(std::vector<float> values, std::vector<int64_t> shape,
                 WireType type = WireType::kFp32, bool raw = true) {
  return InferInput{.name = "input",
                    .shape = std::move(shape),
                    .values = std::move(values),
                    .wire_type = type,
                    .raw = raw};
}

inference::ModelInferRequest Encode(const std::vector<InferInput>& inputs,
                                    const InferOptions& options = {}) {
  auto request = EncodeInferRequest("digits", inputs, options);
  EXPECT_TRUE(request.ok()) << request.status();
  return request.ok() ? *request : inference::ModelInferRequest();
}

TEST(TensorCodecTest, EncodesRawFp32AsLittleEndianBytes) {
  const auto request = Encode({Input({1.0f, -2.0f, 0.5f, 0.0f}, {2, 2})});
  EXPECT_EQ(request.model_name(), "digits");
  ASSERT_EQ(request.inputs_size(), 1);
  EXPECT_EQ(request.inputs(0).name(), "input");
  EXPECT_EQ(request.inputs(0).datatype(), "FP32");
  EXPECT_THAT(request.inputs(0).shape(), ElementsAre(2, 2));
  EXPECT_FALSE(request.inputs(0).has_contents());
  ASSERT_EQ(request.raw_input_contents_size(), 1);
  EXPECT_EQ(request.raw_input_contents(0), Bytes({0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0,
                                                  0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x00}));
}

TEST(TensorCodecTest, EncodesRawFp16AsLittleEndianHalves) {
  const auto request =
      Encode({Input({1.0f, -2.0f, 65504.0f, 1.0f / 3.0f}, {1, 4}, WireType::kFp16)});
  EXPECT_EQ(request.inputs(0).datatype(), "FP16");
  ASSERT_EQ(request.raw_input_contents_size(), 1);
  EXPECT_EQ(request.raw_input_contents(0), Bytes({0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x55, 0x35}));
}

TEST(TensorCodecTest, EncodesRawBf16AsLittleEndianBFloat16) {
  const auto request =
      Encode({Input({1.0f, -2.0f, 3.14159265f, 1.0f / 3.0f}, {4, 1}, WireType::kBf16)});
  EXPECT_EQ(request.inputs(0).datatype(), "BF16");
  EXPECT_THAT(request.inputs(0).shape(), ElementsAre(4, 1));
  ASSERT_EQ(request.raw_input_contents_size(), 1);
  EXPECT_EQ(request.raw_input_contents(0), Bytes({0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40, 0xab, 0x3e}));
}

TEST(TensorCodecTest, RandomFp32ValuesSurviveTheRawBytesExactly) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const std::vector<float> values = moe::testing::RandomFloats(rng, 3 * 17, 100.0f);
  const auto request = Encode({Input(values, {3, 17})});
  ASSERT_EQ(request.raw_input_contents(0).size(), values.size() * 4) << "seed " << seed;
  for (size_t i = 0; i < values.size(); ++i) {
    const auto* b =
        reinterpret_cast<const unsigned char*>(request.raw_input_contents(0).data()) + 4 * i;
    const uint32_t bits = b[0] | b[1] << 8 | b[2] << 16 | static_cast<uint32_t>(b[3]) << 24;
    float decoded;
    std::memcpy(&decoded, &bits, 4);
    ASSERT_EQ(decoded, values[i]) << "value " << i << " seed " << seed;
  }
}

TEST(TensorCodecTest, EncodesTypedFp32InFp32Contents) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const std::vector<float> values = moe::testing::RandomFloats(rng, 2 * 5);
  const auto request = Encode({Input(values, {2, 5}, WireType::kFp32, /*raw=*/false)});
  EXPECT_THAT(request.raw_input_contents(), IsEmpty());
  EXPECT_EQ(request.inputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<float>(request.inputs(0).contents().fp32_contents().begin(),
                               request.inputs(0).contents().fp32_contents().end()),
            values)
      << "seed " << seed;
}

TEST(TensorCodecTest, EncodesOptionsAsRequestParameters) {
  const auto request = Encode({Input({1, 2}, {1, 2})}, {.want_routing = true,
                                                        .outputs = {"logits", "routing_weights"},
                                                        .priority = 3,
                                                        .queue_timeout = absl::Microseconds(1500),
                                                        .request_id = "req-7"});
  EXPECT_EQ(request.id(), "req-7");
  ASSERT_EQ(request.outputs_size(), 2);
  EXPECT_EQ(request.outputs(0).name(), "logits");
  EXPECT_EQ(request.outputs(1).name(), "routing_weights");
  const auto& parameters = request.parameters();
  ASSERT_TRUE(parameters.contains("routing"));
  EXPECT_EQ(parameters.at("routing").parameter_choice_case(),
            inference::InferParameter::kBoolParam);
  EXPECT_TRUE(parameters.at("routing").bool_param());
  ASSERT_TRUE(parameters.contains("priority"));
  EXPECT_EQ(parameters.at("priority").int64_param(), 3);
  ASSERT_TRUE(parameters.contains("timeout"));
  EXPECT_EQ(parameters.at("timeout").parameter_choice_case(),
            inference::InferParameter::kInt64Param);
  EXPECT_EQ(parameters.at("timeout").int64_param(), 1500);
}

TEST(TensorCodecTest, RoundsTheQueueTimeoutUpToWholeMicroseconds) {
  const auto request = Encode({Input({1}, {1, 1})}, {.queue_timeout = absl::Nanoseconds(500)});
  EXPECT_EQ(request.parameters().at("timeout").int64_param(), 1) << "0.5 µs must not mean none";
}

TEST(TensorCodecTest, SendsNoParametersOrOutputsByDefault) {
  const auto request = Encode({Input({1}, {1, 1})});
  EXPECT_THAT(request.parameters(), IsEmpty());
  EXPECT_THAT(request.outputs(), IsEmpty());
  EXPECT_EQ(request.id(), "");
}

TEST(TensorCodecTest, RefusesBadInputsNamingWhatIsWrong) {
  const InferInput good = Input({1, 2, 3, 4}, {2, 2});
  struct Case {
    std::vector<InferInput> inputs;
    std::string message;
  };
  InferInput unnamed = good;
  unnamed.name = "";
  InferInput renamed = good;
  renamed.name = "other";
  InferInput typed = good;
  typed.raw = false;
  renamed.raw = false;
  const std::vector<Case> cases = {
      {{}, "no inputs"},
      {{unnamed}, "input 0 has an empty name"},
      {{good, good}, "input 'input' is given more than once"},
      {{Input({1, 2, 3}, {2, 2})}, "input 'input' has shape [2, 2] (4 values) but 3 values"},
      {{Input({}, {2, -1})}, "input 'input' has shape [2, -1]"},
      {{Input({1}, {})}, "input 'input' has no shape"},
      {{Input({1, 2}, {1, 2}, WireType::kFp16, /*raw=*/false)}, "FP16 and typed"},
      {{Input({1, 2}, {1, 2}, WireType::kBf16, /*raw=*/false)}, "BF16 and typed"},
      {{good, renamed}, "all raw or all typed"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ValidateInputs(c.inputs),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
    EXPECT_THAT(EncodeInferRequest("digits", c.inputs, {}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
  MOE_EXPECT_OK(ValidateInputs({good}));
  MOE_EXPECT_OK(ValidateInputs({typed}));
  MOE_EXPECT_OK(ValidateInputs({Input({}, {0, 64})}));  // zero rows: the server's to judge
}

TEST(TensorCodecTest, RefusesBadOptions) {
  const std::vector<InferInput> inputs = {Input({1}, {1, 1})};
  EXPECT_THAT(EncodeInferRequest("digits", inputs, {.priority = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("priority is -1")));
  EXPECT_THAT(EncodeInferRequest("digits", inputs, {.queue_timeout = absl::Milliseconds(-1)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue_timeout")));
  EXPECT_THAT(EncodeInferRequest("digits", inputs, {.timeout = absl::ZeroDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout is 0")));
}

// --- responses ---

inference::ModelInferResponse::InferOutputTensor* AddOutput(inference::ModelInferResponse& response,
                                                            const std::string& name,
                                                            const std::string& datatype,
                                                            std::vector<int64_t> shape) {
  auto* output = response.add_outputs();
  output->set_name(name);
  output->set_datatype(datatype);
  output->mutable_shape()->Add(shape.begin(), shape.end());
  return output;
}

TEST(TensorCodecTest, DecodesRawFp32AndInt32Outputs) {
  inference::ModelInferResponse response;
  response.set_model_name("digits");
  response.set_id("abc");
  AddOutput(response, "logits", "FP32", {1, 2});
  AddOutput(response, "routing_expert_ids", "INT32", {1, 1, 2});
  response.add_raw_output_contents(Bytes({0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0}));
  response.add_raw_output_contents(Bytes({0x07, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff}));
  auto result = DecodeInferResponse(response);
  ASSERT_THAT(result, moe::testing::IsOk());
  EXPECT_EQ(result->model_name, "digits");
  EXPECT_EQ(result->id, "abc");
  ASSERT_EQ(result->outputs.size(), 2u);
  const OutputTensor* logits = result->Find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_EQ(logits->datatype, "FP32");
  EXPECT_THAT(logits->shape, ElementsAre(1, 2));
  EXPECT_THAT(logits->fp32, ElementsAre(1.0f, -2.0f));
  EXPECT_THAT(logits->int32, IsEmpty());
  const OutputTensor* ids = result->Find("routing_expert_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_THAT(ids->shape, ElementsAre(1, 1, 2));
  EXPECT_THAT(ids->int32, ElementsAre(7, -1));
  EXPECT_EQ(result->Find("nothing"), nullptr);
}

TEST(TensorCodecTest, DecodesTypedFp32AndInt32Outputs) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const std::vector<float> logits = moe::testing::RandomFloats(rng, 3 * 10);
  inference::ModelInferResponse response;
  AddOutput(response, "logits", "FP32", {3, 10})
      ->mutable_contents()
      ->mutable_fp32_contents()
      ->Add(logits.begin(), logits.end());
  const std::vector<int32_t> ids = {0, 7, 3, 1, 5, 2, 4, 6, 1, 0, 2, 3};
  AddOutput(response, "routing_expert_ids", "INT32", {3, 2, 2})
      ->mutable_contents()
      ->mutable_int_contents()
      ->Add(ids.begin(), ids.end());
  auto result = DecodeInferResponse(response);
  ASSERT_THAT(result, moe::testing::IsOk());
  EXPECT_EQ(result->Find("logits")->fp32, logits) << "seed " << seed;
  EXPECT_EQ(result->Find("routing_expert_ids")->int32, ids);
}

TEST(TensorCodecTest, DecodesTheTimingParameters) {
  inference::ModelInferResponse response;
  (*response.mutable_parameters())["queue_us"].set_int64_param(12);
  (*response.mutable_parameters())["compute_us"].set_uint64_param(345);
  (*response.mutable_parameters())["batch_rows"].set_int64_param(8);
  (*response.mutable_parameters())["other"].set_string_param("x");
  auto result = DecodeInferResponse(response);
  ASSERT_THAT(result, moe::testing::IsOk());
  EXPECT_EQ(result->queue_us, 12);
  EXPECT_EQ(result->compute_us, 345);
  EXPECT_EQ(result->batch_rows, 8);

  auto bare = DecodeInferResponse(inference::ModelInferResponse());
  ASSERT_THAT(bare, moe::testing::IsOk());
  EXPECT_EQ(bare->queue_us, std::nullopt);
  EXPECT_EQ(bare->compute_us, std::nullopt);
  EXPECT_EQ(bare->batch_rows, std::nullopt);
}

TEST(TensorCodecTest, RefusesResponsesThatContradictTheirShapes) {
  {
    inference::ModelInferResponse response;
    AddOutput(response, "logits", "FP32", {1, 2});
    response.add_raw_output_contents(std::string(7, '\0'));
    EXPECT_THAT(DecodeInferResponse(response),
                StatusIs(absl::StatusCode::kInternal,
                         HasSubstr("output 'logits' has 7 bytes of raw contents")));
  }
  {
    inference::ModelInferResponse response;
    AddOutput(response, "logits", "FP32", {2, 2})->mutable_contents()->add_fp32_contents(1.0f);
    EXPECT_THAT(DecodeInferResponse(response),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("output 'logits' has 1 typed")));
  }
  {
    inference::ModelInferResponse response;
    AddOutput(response, "a", "FP32", {1});
    AddOutput(response, "b", "FP32", {1});
    response.add_raw_output_contents(std::string(4, '\0'));
    EXPECT_THAT(DecodeInferResponse(response),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("2 outputs but 1 raw")));
  }
  {
    inference::ModelInferResponse response;
    AddOutput(response, "logits", "FP32", {-1, 2});
    EXPECT_THAT(DecodeInferResponse(response),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("invalid shape [-1, 2]")));
  }
  {
    inference::ModelInferResponse response;
    AddOutput(response, "logits", "FP64", {1});
    EXPECT_THAT(DecodeInferResponse(response),
                StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("datatype FP64")));
  }
}

}  // namespace
}  // namespace moe::client
