// Shared by the integration tests of moe-server: where the binaries and test models are,
// starting the server, building ModelInfer requests, reading responses, gRPC status matchers.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/server_process.h"

namespace moe::integration {

// $MOE_SERVER_BINARY when set, else the build's server/moe-server.
std::string ServerBinary();
// The synthetic MoEMLP checkpoint the ctest fixture makes with moe-make-synthetic.
std::string SyntheticModelDir();
// The repository root.
std::string SourceDir();

// The built-in model.
inline constexpr char kDigits[] = "digits";
inline constexpr int64_t kDigitsWidth = 64;
inline constexpr int64_t kDigitsOutputs = 10;
inline constexpr int64_t kDigitsMoELayers = 2;
inline constexpr int kDigitsTopK = 2;
inline constexpr int64_t kDigitsExperts = 8;

// The synthetic test model (tests/integration/CMakeLists.txt makes it with these sizes).
inline constexpr char kSynthetic[] = "synthetic";
inline constexpr int64_t kSyntheticWidth = 64;
inline constexpr int64_t kSyntheticOutputs = 16;
inline constexpr int64_t kSyntheticHidden = 512;
inline constexpr int64_t kSyntheticMoELayers = 2;
inline constexpr int kSyntheticTopK = 2;
inline constexpr int64_t kSyntheticExperts = 8;

// "--model synthetic=<dir>"
std::vector<std::string> SyntheticModelFlag();

// For tests that need requests to wait in the queue: the synthetic model with
// --max-batch-tokens kOneBatchRows, and requests of kOneBatchRows rows, so that every request is
// a batch of its own, run one after the other (milliseconds each even on a fast idle machine).
inline constexpr int64_t kOneBatchRows = 16;
std::vector<std::string> OneRequestPerBatchArgs(std::vector<std::string> extra = {});
// "--model digits=<repository>/models/builtin": the built-in model's own checkpoint, for
// servers that serve it beside others (with no --model it is served alone).
std::vector<std::string> DigitsModelFlag();
// Both of the above.
std::vector<std::string> DigitsAndSyntheticFlags();

// Starts moe-server on a free loopback port with `args` (plus "--backend cpu" unless `args`
// name a backend, so results compare with the CPU engine run in-process) and waits until it is
// ready. ADD_FAILURE-free: the caller asserts on the status.
absl::StatusOr<std::unique_ptr<testing::ServerProcess>> StartServer(
    std::vector<std::string> args = {});

using Stub = inference::GRPCInferenceService::Stub;
std::unique_ptr<Stub> NewStub(const testing::ServerProcess& server);

// One server for all the tests of a suite (started once per process: ctest runs each test in
// its own). `Derived::ServerArgs()` returns its flags. A suite whose server does not start
// fails every test with the reason and the server's log tail.
template <typename Derived>
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = StartServer(Derived::ServerArgs());
    if (server.ok()) {
      server_ = *std::move(server);
    } else {
      start_error_ = std::string(server.status().message());
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "moe-server did not start: " << start_error_;
    stub_ = NewStub(*server_);
  }
  void TearDown() override {
    if (HasFailure() && server_ != nullptr) {
      std::fprintf(stderr, "---- server log (tail) ----\n%s\n---- end of server log ----\n",
                   server_->LogTail().c_str());
    }
  }

  static testing::ServerProcess& server() { return *server_; }
  Stub& stub() { return *stub_; }

 private:
  inline static std::unique_ptr<testing::ServerProcess> server_;
  inline static std::string start_error_;
  std::unique_ptr<Stub> stub_;
};

// `rows` x `width` values uniform in [0, 1) (the digits model's input range).
std::vector<float> UniformRows(std::mt19937_64& rng, int64_t rows, int64_t width);

struct InferOptions {
  // "FP32", "FP16" or "BF16". FP16 and BF16 always travel raw.
  std::string datatype = "FP32";
  // FP32 in raw_input_contents instead of contents.fp32_contents.
  bool raw = false;
  bool routing = false;
  std::string id;
  std::string input_name = "input";
  // Request parameters "priority" and "timeout" (microseconds) when set.
  std::optional<int64_t> priority;
  std::optional<int64_t> timeout_us;
  // Outputs asked for by name; empty: every output.
  std::vector<std::string> outputs;
};

// One input tensor [rows, width] holding `values` converted to `options.datatype`.
inference::ModelInferRequest MakeInferRequest(const std::string& model,
                                              const std::vector<float>& values, int64_t rows,
                                              int64_t width, const InferOptions& options = {});

// `values` rounded to `datatype` ("FP32", "FP16", "BF16") and widened back: what the server
// computes on.
std::vector<float> RoundedTo(const std::string& datatype, const std::vector<float>& values);

// The output tensor called `name` and its index (for raw_output_contents), or null.
const inference::ModelInferResponse::InferOutputTensor* FindOutput(
    const inference::ModelInferResponse& response, const std::string& name, int* index = nullptr);

// An FP32 / INT32 output's values, typed or raw, checked against its shape; errors name what
// is wrong with the response.
absl::StatusOr<std::vector<float>> OutputFloats(const inference::ModelInferResponse& response,
                                                const std::string& name);
absl::StatusOr<std::vector<int32_t>> OutputInt32s(const inference::ModelInferResponse& response,
                                                  const std::string& name);

// An int64 (or uint64) response parameter.
std::optional<int64_t> Int64Parameter(const inference::ModelInferResponse& response,
                                      const std::string& key);

// A unary ModelInfer with a deadline.
grpc::Status Infer(Stub& stub, const inference::ModelInferRequest& request,
                   inference::ModelInferResponse* response,
                   absl::Duration timeout = absl::Seconds(60));

std::string StatusCodeName(grpc::StatusCode code);
std::string Describe(const grpc::Status& status);

// EXPECT_THAT(status, GrpcStatusIs(grpc::StatusCode::INVALID_ARGUMENT, HasSubstr("shape")));
MATCHER_P2(GrpcStatusIs, code, message_matcher, "") {
  *result_listener << "status: " << ::moe::integration::Describe(arg);
  return arg.error_code() == code &&
         ::testing::ExplainMatchResult(message_matcher, arg.error_message(), result_listener);
}

MATCHER(GrpcOk, "is OK") {
  if (!arg.ok()) *result_listener << "status: " << ::moe::integration::Describe(arg);
  return arg.ok();
}

// A synthetic-model request of kOneBatchRows random rows.
inference::ModelInferRequest OneBatchRequest(std::mt19937_64& rng,
                                             const InferOptions& options = {});

// The largest |a - b| over two equally long vectors (infinity when their sizes differ).
double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace moe::integration
