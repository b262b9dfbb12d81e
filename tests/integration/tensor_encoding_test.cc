// How tensors travel: typed fp32_contents in, typed out; raw_input_contents in, raw out; FP16
// and BF16 raw inputs are widened exactly, so they give the FP32 answer of the rounded values.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

using inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

class TensorEncodingTest : public SharedServerTest<TensorEncodingTest> {
 public:
  static std::vector<std::string> ServerArgs() { return {}; }

 protected:
  // Runs `rows` rows of `values` encoded as `options` say; fails the test on error.
  ModelInferResponse Run(const std::vector<float>& values, int64_t rows,
                         const InferOptions& options) {
    ModelInferResponse response;
    const grpc::Status status =
        Infer(stub(), MakeInferRequest(kDigits, values, rows, kDigitsWidth, options), &response);
    EXPECT_THAT(status, GrpcOk()) << options.datatype << (options.raw ? " raw" : " typed");
    return response;
  }

  std::vector<float> Logits(const ModelInferResponse& response) {
    auto logits = OutputFloats(response, "logits");
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? *logits : std::vector<float>();
  }
};

TEST_F(TensorEncodingTest, TypedRequestGetsTypedOutputs) {
  std::mt19937_64 rng(testing::FreshSeed());
  const auto response = Run(UniformRows(rng, 3, kDigitsWidth), 3, {});
  EXPECT_THAT(response.raw_output_contents(), IsEmpty());
  ASSERT_THAT(response.outputs(), SizeIs(1));
  EXPECT_THAT(response.outputs(0).contents().fp32_contents(), SizeIs(3 * kDigitsOutputs));
}

TEST_F(TensorEncodingTest, RawRequestGetsRawOutputsEqualToTyped) {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const auto values = UniformRows(rng, 5, kDigitsWidth);
  const auto typed = Run(values, 5, {});
  const auto raw = Run(values, 5, {.raw = true});
  ASSERT_THAT(raw.outputs(), SizeIs(1));
  ASSERT_THAT(raw.raw_output_contents(), SizeIs(1));
  EXPECT_FALSE(raw.outputs(0).has_contents()) << "raw responses carry no typed contents";
  EXPECT_EQ(raw.raw_output_contents(0).size(), 5 * kDigitsOutputs * sizeof(float));
  EXPECT_THAT(raw.outputs(0).shape(), ElementsAre(5, kDigitsOutputs));
  // Alone on the server, the same rows form the same batch: bit-identical results.
  EXPECT_EQ(Logits(raw), Logits(typed)) << "seed " << seed;
}

// A half-precision request computes on its values widened to float32: the same as an FP32
// request of the rounded values.
void ExpectHalfMatchesRoundedFp32(const std::string& datatype, Stub& stub) {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const int64_t rows = 4;
  const auto values = UniformRows(rng, rows, kDigitsWidth);
  const auto request =
      MakeInferRequest(kDigits, values, rows, kDigitsWidth, {.datatype = datatype});
  ASSERT_THAT(request.raw_input_contents(), SizeIs(1));
  ASSERT_EQ(request.raw_input_contents(0).size(), rows * kDigitsWidth * 2);
  ModelInferResponse half;
  ASSERT_THAT(Infer(stub, request, &half), GrpcOk());
  ModelInferResponse full;
  ASSERT_THAT(
      Infer(stub, MakeInferRequest(kDigits, RoundedTo(datatype, values), rows, kDigitsWidth),
            &full),
      GrpcOk());
  // The outputs are FP32 whatever the input type, raw because the request was raw.
  ASSERT_THAT(half.outputs(), SizeIs(1));
  EXPECT_EQ(half.outputs(0).datatype(), "FP32");
  EXPECT_THAT(half.raw_output_contents(), SizeIs(1));
  auto half_logits = OutputFloats(half, "logits");
  auto full_logits = OutputFloats(full, "logits");
  ASSERT_TRUE(half_logits.ok()) << half_logits.status();
  ASSERT_TRUE(full_logits.ok()) << full_logits.status();
  EXPECT_EQ(*half_logits, *full_logits) << datatype << ", seed " << seed;
}

TEST_F(TensorEncodingTest, Fp16RawInputEqualsFp32OfTheRoundedValues) {
  ExpectHalfMatchesRoundedFp32("FP16", stub());
}

TEST_F(TensorEncodingTest, Bf16RawInputEqualsFp32OfTheRoundedValues) {
  ExpectHalfMatchesRoundedFp32("BF16", stub());
}

TEST_F(TensorEncodingTest, Bf16BytesAreReadLittleEndian) {
  // A row of one value, 0.5 (0x3F00 in bfloat16); byte-swapped it would read as a tiny
  // denormal, giving other logits.
  const std::vector<float> halves(kDigitsWidth, 0.5f);
  const auto bf16 = Run(halves, 1, {.datatype = "BF16"});
  const auto fp32 = Run(halves, 1, {});
  EXPECT_EQ(Logits(bf16), Logits(fp32));
  std::vector<float> zeros(kDigitsWidth, 0.0f);
  EXPECT_NE(Logits(Run(zeros, 1, {})), Logits(fp32)) << "the model ignores its input";
}

TEST_F(TensorEncodingTest, RawRoutingOutputsAreRawToo) {
  std::mt19937_64 rng(testing::FreshSeed());
  const auto response = Run(UniformRows(rng, 2, kDigitsWidth), 2, {.raw = true, .routing = true});
  ASSERT_THAT(response.outputs(), SizeIs(3));
  EXPECT_THAT(response.raw_output_contents(), SizeIs(3));
  for (const auto& output : response.outputs()) EXPECT_FALSE(output.has_contents());
  auto ids = OutputInt32s(response, "routing_expert_ids");
  EXPECT_TRUE(ids.ok()) << ids.status();
}

}  // namespace
}  // namespace moe::integration
