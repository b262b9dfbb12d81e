#include "tests/integration/async_calls.h"

#include <chrono>

namespace moe::integration {

AsyncCalls::AsyncCalls(inference::GRPCInferenceService::Stub& stub)
    : stub_(stub), drainer_([this] { DrainQueue(); }) {}

AsyncCalls::~AsyncCalls() {
  {
    absl::MutexLock lock(&mutex_);
    for (auto& call : calls_) {
      if (!call->done) call->context.TryCancel();
    }
  }
  WaitAll(absl::InfiniteDuration());
  queue_.Shutdown();
  drainer_.join();
}

size_t AsyncCalls::Start(const inference::ModelInferRequest& request, absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  calls_.push_back(std::make_unique<Call>());
  Call* call = calls_.back().get();
  call->context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoMicroseconds(timeout));
  call->start_time = absl::Now();
  call->reader = stub_.AsyncModelInfer(&call->context, request, &queue_);
  call->reader->Finish(&call->response, &call->status, call);
  return calls_.size() - 1;
}

void AsyncCalls::Cancel(size_t index) {
  absl::MutexLock lock(&mutex_);
  calls_.at(index)->context.TryCancel();
}

void AsyncCalls::DrainQueue() {
  void* tag = nullptr;
  bool ok = false;
  while (queue_.Next(&tag, &ok)) {
    absl::MutexLock lock(&mutex_);
    Call* call = static_cast<Call*>(tag);
    call->finish_time = absl::Now();
    call->done = true;
    ++finished_;
  }
}

bool AsyncCalls::WaitAll(absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  auto all_done = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return finished_ == calls_.size(); };
  return mutex_.AwaitWithTimeout(absl::Condition(&all_done), timeout);
}

bool AsyncCalls::WaitForFinished(size_t count, absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  auto enough = [this, count]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return finished_ >= count; };
  return mutex_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

size_t AsyncCalls::size() const {
  absl::MutexLock lock(&mutex_);
  return calls_.size();
}

size_t AsyncCalls::finished() const {
  absl::MutexLock lock(&mutex_);
  return finished_;
}

const grpc::Status& AsyncCalls::status(size_t index) const {
  absl::MutexLock lock(&mutex_);
  return calls_.at(index)->status;
}

const inference::ModelInferResponse& AsyncCalls::response(size_t index) const {
  absl::MutexLock lock(&mutex_);
  return calls_.at(index)->response;
}

absl::Time AsyncCalls::start_time(size_t index) const {
  absl::MutexLock lock(&mutex_);
  return calls_.at(index)->start_time;
}

absl::Time AsyncCalls::finish_time(size_t index) const {
  absl::MutexLock lock(&mutex_);
  return calls_.at(index)->finish_time;
}

}  // namespace moe::integration
