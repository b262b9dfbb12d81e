#include "server/api/infer_request_parser.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/dtype.h"
#include "tests/testing/fake_model.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::api {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;
using Request = inference::ModelInferRequest;

constexpr int64_t kMaxRows = 8;

class InferRequestParserTest : public ::testing::Test {
 protected:
  const engine::ModelDescription& model() const { return model_.description(); }

  // A valid typed FP32 request of `rows` rows.
  Request TypedRequest(int64_t rows) {
    Request request;
    request.set_model_name("fake");
    auto* input = request.add_inputs();
    input->set_name("input");
    input->set_datatype("FP32");
    input->add_shape(rows);
    input->add_shape(testing::FakeModel::kInputWidth);
    values_ = testing::RandomFloats(rng_, rows * testing::FakeModel::kInputWidth);
    for (float v : values_) input->mutable_contents()->add_fp32_contents(v);
    return request;
  }

  absl::StatusOr<ParsedInferRequest> Parse(const Request& request) {
    return ParseInferRequest(request, model(), kMaxRows);
  }

  testing::FakeModel model_;
  uint64_t seed_ = testing::FreshSeed();
  std::mt19937_64 rng_{seed_};
  std::vector<float> values_;
};

TEST_F(InferRequestParserTest, TypedFp32IsReadExactly) {
  const Request request = TypedRequest(3);
  absl::StatusOr<ParsedInferRequest> parsed = Parse(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rows, 3);
  EXPECT_EQ(parsed->input, values_) << "seed " << seed_;
  EXPECT_FALSE(parsed->raw_output);
  EXPECT_TRUE(parsed->want_output);
  EXPECT_FALSE(parsed->want_routing());
}

TEST_F(InferRequestParserTest, RawFp32Fp16AndBf16AreDecoded) {
  for (const char* datatype : {"FP32", "FP16", "BF16"}) {
    SCOPED_TRACE(datatype);
    Request request = TypedRequest(2);
    request.mutable_inputs(0)->set_datatype(datatype);
    request.mutable_inputs(0)->clear_contents();
    std::string bytes;
    std::vector<float> expected;
    for (float v : values_) {
      if (std::string(datatype) == "FP32") {
        bytes.append(reinterpret_cast<const char*>(&v), 4);
        expected.push_back(v);
      } else {
        const uint16_t bits =
            std::string(datatype) == "FP16" ? kernels::FloatToHalf(v) : kernels::FloatToBF16(v);
        bytes.append(reinterpret_cast<const char*>(&bits), 2);
        expected.push_back(std::string(datatype) == "FP16" ? kernels::HalfToFloat(bits)
                                                           : kernels::BF16ToFloat(bits));
      }
    }
    request.add_raw_input_contents(bytes);
    absl::StatusOr<ParsedInferRequest> parsed = Parse(request);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->input, expected) << "seed " << seed_;
    EXPECT_TRUE(parsed->raw_output);
  }
}

TEST_F(InferRequestParserTest, RefusesWrongTensorName) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_name("pixels");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input 'pixels'")));
}

TEST_F(InferRequestParserTest, RefusesMissingInput) {
  Request request = TypedRequest(1);
  request.clear_inputs();
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no inputs")));
}

TEST_F(InferRequestParserTest, RefusesExtraInput) {
  Request request = TypedRequest(1);
  *request.add_inputs() = request.inputs(0);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("given 2 times")));
}

TEST_F(InferRequestParserTest, RefusesUnsupportedDatatype) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_datatype("INT32");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'INT32'")));
}

TEST_F(InferRequestParserTest, RefusesWrongRankAndWidth) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->add_shape(1);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape [1, 4, 1]")));
  request = TypedRequest(1);
  request.mutable_inputs(0)->set_shape(1, 5);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expects [rows, 4]")));
}

TEST_F(InferRequestParserTest, RefusesNegativeDimension) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_shape(0, -1);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dimension 0 is negative")));
}

TEST_F(InferRequestParserTest, RefusesOverflowingDimensions) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_shape(0, std::numeric_limits<int64_t>::max());
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 8 rows")));
  request = TypedRequest(1);
  request.mutable_inputs(0)->set_shape(1, std::numeric_limits<int64_t>::max());
  EXPECT_THAT(Parse(request).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(InferRequestParserTest, RefusesEmptyTensor) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_shape(0, 0);
  request.mutable_inputs(0)->clear_contents();
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST_F(InferRequestParserTest, RefusesRowsAboveTheLimit) {
  const Request request = TypedRequest(kMaxRows + 1);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--max-batch-tokens")));
}

TEST_F(InferRequestParserTest, RefusesRawByteSizeMismatch) {
  Request request = TypedRequest(2);
  request.mutable_inputs(0)->clear_contents();
  request.add_raw_input_contents(std::string(2 * 4 * 4 - 1, '\0'));
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("31 raw bytes")));
}

TEST_F(InferRequestParserTest, RefusesTypedValueCountMismatch) {
  Request request = TypedRequest(2);
  request.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("9 fp32_contents")));
}

TEST_F(InferRequestParserTest, RefusesTypedHalfPrecision) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->set_datatype("FP16");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw_input_contents")));
}

TEST_F(InferRequestParserTest, RefusesValuesInTheWrongTypedField) {
  Request request = TypedRequest(1);
  request.mutable_inputs(0)->mutable_contents()->add_int_contents(3);
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another typed field")));
}

TEST_F(InferRequestParserTest, RefusesNanAndInfinity) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    Request request = TypedRequest(2);
    request.mutable_inputs(0)->mutable_contents()->set_fp32_contents(6, bad);
    EXPECT_THAT(Parse(request).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 1, column 2")));
  }
}

TEST_F(InferRequestParserTest, RefusesUnknownDuplicateAndTooManyOutputs) {
  Request request = TypedRequest(1);
  request.add_outputs()->set_name("probabilities");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no output 'probabilities'")));
  request = TypedRequest(1);
  request.add_outputs()->set_name("logits");
  request.add_outputs()->set_name("logits");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("requested twice")));
  request = TypedRequest(1);
  for (int i = 0; i < 4; ++i) request.add_outputs()->set_name("logits");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("asks for 4 outputs")));
}

TEST_F(InferRequestParserTest, RoutingParameterAddsBothRoutingOutputs) {
  Request request = TypedRequest(1);
  (*request.mutable_parameters())["routing"].set_bool_param(true);
  absl::StatusOr<ParsedInferRequest> parsed = Parse(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->want_output && parsed->want_routing_ids && parsed->want_routing_weights);
  (*request.mutable_parameters())["routing"].set_string_param("yes");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bool_param")));
}

TEST_F(InferRequestParserTest, ReadsTimeoutAndPriority) {
  Request request = TypedRequest(1);
  (*request.mutable_parameters())["timeout"].set_int64_param(2500);
  (*request.mutable_parameters())["priority"].set_int64_param(2);
  absl::StatusOr<ParsedInferRequest> parsed = Parse(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->timeout, absl::Microseconds(2500));
  EXPECT_EQ(parsed->priority, 2);
  (*request.mutable_parameters())["priority"].set_int64_param(-1);
  EXPECT_THAT(Parse(request).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(InferRequestParserTest, RefusesUnknownVersion) {
  Request request = TypedRequest(1);
  request.set_model_version("7");
  EXPECT_THAT(Parse(request).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version '7'")));
}

TEST_F(InferRequestParserTest, LanguageModelIsRefusedWithItsReason) {
  engine::ModelDescription lm = model();
  lm.tensor_servable = false;
  lm.not_servable_reason = "model 'mix' is a decoder language model";
  EXPECT_THAT(ParseInferRequest(TypedRequest(1), lm, kMaxRows).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("decoder language")));
}

}  // namespace
}  // namespace moe::api
