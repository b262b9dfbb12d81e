// moe-serve's C++ client: one connection to a moe-server (or any KServe v2 gRPC server) with
// health, model listing and description, and inference, typed or raw, blocking or
// asynchronous. Errors are absl::Status values carrying the server's gRPC code and message,
// prefixed with the call that failed ("ModelInfer: input 'input' has shape [2, 63]; ..."). Calls
// answered UNAVAILABLE or RESOURCE_EXHAUSTED (server starting, draining or full) are retried with
// exponential back-off and full jitter, within the call's deadline (no wait ends past it); no
// other error is retried. An error after retries ends with " (after N attempts)". Errors the
// client finds itself (bad options, bad inputs) are INVALID_ARGUMENT and nothing is sent.
//
//   MOE_ASSIGN_OR_RETURN(auto client, moe::client::Client::Connect({.target = "host:8001"}));
//   moe::client::InferInput input{.name = "input", .shape = {1, 64}, .values = pixels};
//   MOE_ASSIGN_OR_RETURN(auto result, client->Infer("digits", {input}, {.want_routing = true}));
//   const moe::client::OutputTensor* logits = result.Find("logits");
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "moe/v1/moe_service.pb.h"

namespace moe::client {

struct RetryPolicy {
  int max_attempts = 3;  // 1: no retry
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  double multiplier = 2.0;  // each wait is up to multiplier x the previous (full jitter)
};

struct ConnectOptions {
  std::string target = "localhost:8001";  // HOST:PORT, or any gRPC target URI
  // TLS. With `tls` false the channel is plaintext. With it true, the server is verified
  // against `tls_root_certs_file` (PEM; empty: the system's roots), and a client certificate is
  // presented when both client files are given (mutual TLS).
  bool tls = false;
  std::string tls_root_certs_file;
  std::string tls_client_cert_file;
  std::string tls_client_key_file;
  std::string tls_server_name;  // overrides the name checked in the server's certificate
  // Sent as "authorization: Bearer <token>" metadata with every call (and every retry) when not
  // empty; over plaintext too, where anyone on the path can read it.
  std::string bearer_token;
  int max_message_bytes = 64 << 20;            // send and receive limit (the server's default)
  absl::Duration timeout = absl::Seconds(30);  // per call, retries included, unless overridden
  RetryPolicy retry;
};

// Encoding of input values on the wire; the server converts to float32.
enum class WireType { kFp32, kFp16, kBf16 };

struct InferInput {
  std::string name = "input";
  std::vector<int64_t> shape;  // [rows, width]
  std::vector<float> values;   // row-major, product(shape) values
  WireType wire_type = WireType::kFp32;
  // Raw: the values travel as bytes in raw_input_contents (fast, the default); typed: as
  // repeated fields of InferTensorContents (FP32 only).
  bool raw = true;
};

struct InferOptions {
  bool want_routing = false;                    // adds routing_expert_ids / routing_weights outputs
  std::vector<std::string> outputs;             // names to return; empty: the server's default
  std::optional<absl::Duration> timeout;        // this call's deadline (default: ConnectOptions)
  std::optional<int64_t> priority;              // 1 = highest
  std::optional<absl::Duration> queue_timeout;  // the "timeout" request parameter
  std::string request_id;                       // echoed by the server
};

struct OutputTensor {
  std::string name;
  std::string datatype;  // "FP32" or "INT32"
  std::vector<int64_t> shape;
  std::vector<float> fp32;     // when datatype is FP32
  std::vector<int32_t> int32;  // when datatype is INT32
};

struct InferResult {
  std::string model_name;
  std::string id;
  std::vector<OutputTensor> outputs;
  // The server's timing parameters (moe-server sets them; other servers may not).
  std::optional<int64_t> queue_us;
  std::optional<int64_t> compute_us;
  std::optional<int64_t> batch_rows;

  const OutputTensor* Find(const std::string& name) const;
};

enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };

// A model's shape and inputs as the server describes it: moe.v1 ModelInfo (architecture,
// experts, backend, ...). For servers without moe.v1, the KServe metadata fills name, input and
// output.
using ModelInfo = ::moe::v1::ModelInfo;

class Client {
 public:
  // Makes the channel; INVALID_ARGUMENT for unreadable TLS files or bad options. Does not wait
  // for the server (use WaitForReady or the first call's error).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ConnectOptions& options);
  virtual ~Client() = default;

  // Polls ServerReady (every 100 ms, no retry policy) until it answers true or `timeout` passes
  // (DEADLINE_EXCEEDED then, with the last answer).
  virtual absl::Status WaitForReady(absl::Duration timeout) = 0;

  virtual absl::StatusOr<bool> ServerLive() = 0;
  virtual absl::StatusOr<bool> ServerReady() = 0;
  virtual absl::StatusOr<bool> ModelReady(const std::string& model) = 0;
  // grpc.health.v1 Check of `service` ("" = the whole server, or a model name). A service the
  // server does not know (NOT_FOUND) is kServiceUnknown, not an error.
  virtual absl::StatusOr<HealthStatus> Health(const std::string& service = "") = 0;

  virtual absl::StatusOr<std::vector<ModelInfo>> ListModels() = 0;
  virtual absl::StatusOr<ModelInfo> DescribeModel(const std::string& model) = 0;

  virtual absl::StatusOr<InferResult> Infer(const std::string& model,
                                            const std::vector<InferInput>& inputs,
                                            const InferOptions& options = {}) = 0;
  // Returns at once; `done` runs exactly once, on a gRPC thread, with the result (also for bad
  // inputs: never in the caller's thread). Retries as Infer does; the back-off waits on a
  // grpc::Alarm, so no thread sleeps meanwhile. The client must outlive every call in flight
  // (it may be destroyed once the last `done` has returned, not from inside `done`).
  virtual void InferAsync(const std::string& model, const std::vector<InferInput>& inputs,
                          const InferOptions& options,
                          absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done) = 0;
};

std::string_view HealthStatusName(HealthStatus status);

}  // namespace moe::client
