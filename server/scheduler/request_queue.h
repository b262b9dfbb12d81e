// The bounded queue of accepted requests waiting for a batch: ordered by priority level, then
// arrival; cancellable by ticket; hands out batches up to a row budget. Not thread-safe: the
// batch scheduler guards it with its mutex.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/scheduler/inference_request.h"

namespace moe::scheduler {

// Names a queued request so that it can be taken back (cancellation).
struct RequestTicket {
  int64_t order_level = 0;
  uint64_t sequence = 0;
  friend bool operator<(const RequestTicket& a, const RequestTicket& b) {
    return std::pair(a.order_level, a.sequence) < std::pair(b.order_level, b.sequence);
  }
};

class RequestQueue {
 public:
  explicit RequestQueue(int64_t capacity) : capacity_(capacity) {}

  // Queues `request`; RESOURCE_EXHAUSTED naming the capacity when the queue is full.
  absl::StatusOr<RequestTicket> Push(std::unique_ptr<InferenceRequest> request);

  // Takes a queued request out; nullptr when it is no longer queued.
  std::unique_ptr<InferenceRequest> Remove(const RequestTicket& ticket);

  // Moves requests, in order, into `batch` while their rows fit in `max_rows`. Requests whose
  // deadline is at or before `now` go to `expired` instead and cost no rows. Stops at the first
  // request that does not fit, so that a large request is never overtaken indefinitely.
  void TakeBatch(int64_t max_rows, absl::Time now,
                 std::vector<std::unique_ptr<InferenceRequest>>* batch,
                 std::vector<std::unique_ptr<InferenceRequest>>* expired);

  // Everything still queued, in order (shutdown).
  std::vector<std::unique_ptr<InferenceRequest>> TakeAll();

  bool empty() const { return queue_.empty(); }
  int64_t size() const { return static_cast<int64_t>(queue_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t queued_rows() const { return queued_rows_; }
  // Arrival time of the request that has waited longest; InfiniteFuture when empty.
  absl::Time OldestEnqueueTime() const;

 private:
  int64_t capacity_;
  uint64_t next_sequence_ = 0;
  int64_t queued_rows_ = 0;
  std::map<RequestTicket, std::unique_ptr<InferenceRequest>> queue_;
};

}  // namespace moe::scheduler
