// Many ModelInfer calls in flight at once from one thread (gRPC's async client API): start them
// in a burst, cancel some, wait for all, read each one's status, response and completion time.
#pragma once

#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"

namespace moe::integration {

class AsyncCalls {
 public:
  explicit AsyncCalls(inference::GRPCInferenceService::Stub& stub);
  // Cancels what is still running and waits for it.
  ~AsyncCalls();
  AsyncCalls(const AsyncCalls&) = delete;
  AsyncCalls& operator=(const AsyncCalls&) = delete;

  // Starts one call with a client deadline of `timeout`; returns its index.
  size_t Start(const inference::ModelInferRequest& request,
               absl::Duration timeout = absl::Seconds(60));
  // ClientContext::TryCancel on call `index`.
  void Cancel(size_t index);

  // Waits until every started call has finished; false when `timeout` passed first.
  bool WaitAll(absl::Duration timeout = absl::Seconds(120));
  // Waits until at least `count` calls have finished; false on timeout.
  bool WaitForFinished(size_t count, absl::Duration timeout = absl::Seconds(120));

  size_t size() const;
  size_t finished() const;
  // Valid once call `index` has finished.
  const grpc::Status& status(size_t index) const;
  const inference::ModelInferResponse& response(size_t index) const;
  absl::Time start_time(size_t index) const;
  absl::Time finish_time(size_t index) const;
  absl::Duration latency(size_t index) const { return finish_time(index) - start_time(index); }

 private:
  struct Call {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<inference::ModelInferResponse>> reader;
    absl::Time start_time;
    absl::Time finish_time;
    bool done = false;
  };

  void DrainQueue();

  inference::GRPCInferenceService::Stub& stub_;
  grpc::CompletionQueue queue_;
  mutable absl::Mutex mutex_;
  // unique_ptr: a Call must not move while its call is in flight.
  std::vector<std::unique_ptr<Call>> calls_ ABSL_GUARDED_BY(mutex_);
  size_t finished_ ABSL_GUARDED_BY(mutex_) = 0;
  std::thread drainer_;
};

}  // namespace moe::integration
