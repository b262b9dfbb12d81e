// moe-serve's C++ client: one connection to a moe-server (or any KServe v2 gRPC server) with
// health, model listing and description, and inference, typed or raw, blocking or
// asynchronous. Errors are absl::Status values carrying the server's gRPC code and message,
// prefixed with the call that failed ("ModelInfer: input 'input' has shape [2, 63]; ..."). Calls
// answered UNAVAILABLE or RESOURCE_EXHAUSTED (server starting, draining or full) are retried with
// exponential back-off and full jitter, within the call's deadline (no wait ends past it); no
// other error is retried. An error after retries ends with " (after N attempts)". Errors the
// client finds itself (bad options, bad inputs) are INVALID_ARGUMENT and nothing is sent.
// Generate streams tokens from a decoder language model (moe.v1 Generate) to a callback; see
// GenerateOptions for how it retries (only before anything arrived) and how to stop it early.
//
//   MOE_ASSIGN_OR_RETURN(auto client, moe::client::Client::Connect({.target = "host:8001"}));
//   moe::client::InferInput input{.name = "input", .shape = {1, 64}, .values = pixels};
//   MOE_ASSIGN_OR_RETURN(auto result, client->Infer("digits", {input}, {.want_routing = true}));
//   const moe::client::OutputTensor* logits = result.Find("logits");
//
//   MOE_ASSIGN_OR_RETURN(auto summary, client->Generate("mixtral", {1, 306, 4658}, {
//       .max_new_tokens = 16}, [](const moe::client::GenerateChunk& chunk) {
//         for (int32_t id : chunk.token_ids) std::cout << id << " " << std::flush;
//         return true;  // false stops the stream (CANCELLED)
//       }));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
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

// How the next token is chosen and when generation stops (moe.v1 GenerateRequest). Zero values
// are the server's defaults: greedy decoding, no top-k / top-p / repetition penalty, 64 tokens.
struct GenerateOptions {
  int32_t max_new_tokens = 0;    // 1 or more; 0: the server's default (64)
  float temperature = 0;         // 0: greedy
  int32_t top_k = 0;             // 0: all tokens
  float top_p = 0;               // in [0, 1]; 0 or 1: off
  float repetition_penalty = 0;  // 0 or 1: off
  std::optional<uint64_t> seed;  // the same seed, the same samples; unset: the server draws one
  std::vector<int32_t> stop_token_ids;  // generation stops after any of these (at most 16)
  bool ignore_eos = false;              // do not stop at the model's end-of-sequence ids
  bool logprobs = false;                // return each token's log-probability
  // The whole stream's deadline (default: ConnectOptions::timeout). A long generation needs
  // room: the deadline ends the stream with DEADLINE_EXCEEDED wherever it is.
  std::optional<absl::Duration> timeout;
};

// Tokens as they arrive: one server message.
struct GenerateChunk {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // same length when GenerateOptions::logprobs, else empty
  std::string text;             // models with a tokenizer: the text these tokens add
};

enum class FinishReason {
  kUnspecified,  // the stream ended without saying (a server that does not set it)
  kLength,       // max_new_tokens, or the model's context was full
  kStop,         // a stop token or an end-of-sequence token (part of the output)
};

// A finished stream.
struct GenerateResult {
  FinishReason finish_reason = FinishReason::kUnspecified;
  int32_t prompt_tokens = 0;       // the server's count
  int32_t completion_tokens = 0;   // the server's count (equals token_ids.size())
  std::vector<int32_t> token_ids;  // every generated token, in order
  std::vector<float> logprobs;     // when asked
  std::string text;                // models with a tokenizer: the decoded output
  int64_t messages = 0;            // server messages received
  // As the client saw it: from the Generate call (retries included) to the first message that
  // carried tokens, and to the end of the stream.
  absl::Duration time_to_first_token = absl::ZeroDuration();
  absl::Duration total_time = absl::ZeroDuration();
  // As the server reports it: from the request's arrival to its first token, and how often the
  // sequence was preempted (its KV cache freed and recomputed).
  absl::Duration server_time_to_first_token = absl::ZeroDuration();
  int32_t preemptions = 0;
};

// Called in the calling thread for every message carrying tokens (or text); returning false
// stops the stream: the call is cancelled and Generate returns CANCELLED.
using GenerateCallback = absl::FunctionRef<bool(const GenerateChunk&)>;

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

  // Generates from `prompt_token_ids` with `model` (moe.v1 Generate), blocking: `on_chunk` runs
  // in this thread for each message as it arrives, then the summary is returned. Errors: the
  // server's (INVALID_ARGUMENT naming the field, NOT_FOUND, FAILED_PRECONDITION for a model
  // that does not generate, RESOURCE_EXHAUSTED, UNAVAILABLE), INVALID_ARGUMENT for options the
  // client can tell are wrong (nothing is sent), CANCELLED when `on_chunk` returned false,
  // DEADLINE_EXCEEDED past the deadline. Retries: a call that failed with UNAVAILABLE or
  // RESOURCE_EXHAUSTED before any message arrived is retried as other calls are
  // (ConnectOptions::retry); once a message has arrived nothing is retried (the caller has
  // seen tokens: a retry could repeat or change them), and the error is returned.
  virtual absl::StatusOr<GenerateResult> Generate(const std::string& model,
                                                  const std::vector<int32_t>& prompt_token_ids,
                                                  const GenerateOptions& options,
                                                  GenerateCallback on_chunk) = 0;
};

std::string_view HealthStatusName(HealthStatus status);
// "length", "stop", "unspecified".
std::string_view FinishReasonName(FinishReason reason);

}  // namespace moe::client
