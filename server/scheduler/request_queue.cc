#include "server/scheduler/request_queue.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::scheduler {
namespace {

// Level 0 (no priority given) sorts after every explicit level.
int64_t OrderLevel(int64_t priority_level) {
  return priority_level == kDefaultPriorityLevel ? std::numeric_limits<int64_t>::max()
                                                 : priority_level;
}

}  // namespace

absl::StatusOr<RequestTicket> RequestQueue::Push(std::unique_ptr<InferenceRequest> request) {
  if (size() >= capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request queue is full (", capacity_, " requests waiting; --max-queue); retry later"));
  }
  RequestTicket ticket{OrderLevel(request->priority_level()), next_sequence_++};
  queued_rows_ += request->num_rows();
  queue_.emplace(ticket, std::move(request));
  return ticket;
}

std::unique_ptr<InferenceRequest> RequestQueue::Remove(const RequestTicket& ticket) {
  auto it = queue_.find(ticket);
  if (it == queue_.end()) return nullptr;
  std::unique_ptr<InferenceRequest> request = std::move(it->second);
  queue_.erase(it);
  queued_rows_ -= request->num_rows();
  return request;
}

void RequestQueue::TakeBatch(int64_t max_rows, absl::Time now,
                             std::vector<std::unique_ptr<InferenceRequest>>* batch,
                             std::vector<std::unique_ptr<InferenceRequest>>* expired) {
  int64_t rows = 0;
  auto it = queue_.begin();
  while (it != queue_.end()) {
    InferenceRequest& request = *it->second;
    if (request.deadline() <= now) {
      queued_rows_ -= request.num_rows();
      expired->push_back(std::move(it->second));
      it = queue_.erase(it);
      continue;
    }
    if (rows + request.num_rows() > max_rows) break;
    rows += request.num_rows();
    queued_rows_ -= request.num_rows();
    batch->push_back(std::move(it->second));
    it = queue_.erase(it);
  }
}

std::vector<std::unique_ptr<InferenceRequest>> RequestQueue::TakeAll() {
  std::vector<std::unique_ptr<InferenceRequest>> all;
  all.reserve(queue_.size());
  for (auto& [ticket, request] : queue_) all.push_back(std::move(request));
  queue_.clear();
  queued_rows_ = 0;
  return all;
}

absl::Time RequestQueue::OldestEnqueueTime() const {
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& [ticket, request] : queue_) oldest = std::min(oldest, request->enqueue_time());
  return oldest;
}

}  // namespace moe::scheduler
