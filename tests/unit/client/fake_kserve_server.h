// An in-process KServe v2 server on a loopback port for the client's tests: calls answer from a
// script (given statuses first, then a fixed answer), and the server records what arrived
// (calls per RPC, each call's "authorization" metadata, the last ModelInfer request).
//
// Model "fake": input "x" FP32 [-1, 3], output "y" FP32 [-1, 2]; ModelInfer answers y = the
// first two values of each row (raw when the request was raw) with queue_us = 7. moe.v1 is
// served only when asked (GetModelInfo answers architecture "FakeArch"); otherwise it is
// UNIMPLEMENTED, as on a plain KServe server.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "moe/v1/moe_service.grpc.pb.h"

namespace moe::client::testing {

class FakeKServeServer {
 public:
  struct Options {
    std::shared_ptr<grpc::ServerCredentials> credentials;  // null: plaintext
    bool serve_moe_v1 = false;
  };
  // Null (with a gtest failure) when the server cannot start.
  static std::unique_ptr<FakeKServeServer> Start(const Options& options);
  static std::unique_ptr<FakeKServeServer> Start() { return Start(Options{}); }
  ~FakeKServeServer();
  FakeKServeServer(const FakeKServeServer&) = delete;
  FakeKServeServer& operator=(const FakeKServeServer&) = delete;

  // "127.0.0.1:PORT"
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // The next calls of `rpc` ("ServerLive", "ServerReady", "ModelInfer", ...) answer these
  // statuses, one each, before the normal answer.
  void FailNext(const std::string& rpc, std::vector<grpc::Status> statuses);
  // Every call of `rpc` answers `status` from now on.
  void FailAlways(const std::string& rpc, grpc::Status status);

  int calls(const std::string& rpc) const;
  // The "authorization" metadata of every call so far, in order ("" for a call without).
  std::vector<std::string> authorizations() const;
  inference::ModelInferRequest last_infer_request() const;

 private:
  class KServeService;
  class MoEService;
  FakeKServeServer() = default;

  // Records the call; the status it must answer, or OK for the normal answer.
  grpc::Status Arrived(const std::string& rpc, grpc::ServerContext* context);
  void SetLastInferRequest(const inference::ModelInferRequest& request);

  mutable absl::Mutex mutex_;
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::deque<grpc::Status>> fail_next_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, grpc::Status> fail_always_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> authorizations_ ABSL_GUARDED_BY(mutex_);
  inference::ModelInferRequest last_infer_request_ ABSL_GUARDED_BY(mutex_);

  std::unique_ptr<KServeService> kserve_;
  std::unique_ptr<MoEService> moe_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
};

}  // namespace moe::client::testing
