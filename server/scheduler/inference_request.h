// One accepted inference request as the scheduler holds it: its rows, what it wants back, its
// deadline and priority, and the completion that hands the outcome to whoever waits for it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace moe::scheduler {

// What a finished request gets back. The vectors are the request's own rows, cut out of the
// batch it ran in.
struct InferenceResult {
  std::vector<float> output;        // [rows, output_width]
  std::vector<int32_t> topk_ids;    // [rows, moe_layers, top_k] when routing was asked for
  std::vector<float> topk_weights;  // [rows, moe_layers, top_k] when routing was asked for
  absl::Duration queue_time;        // enqueue -> batch start
  absl::Duration compute_time;      // the batch's forward pass
  int64_t batch_rows = 0;           // rows in the batch this request ran in
  int64_t batch_requests = 0;       // requests in that batch
};

// Called exactly once per accepted request, on the scheduler thread (or on the thread that
// drains or aborts the queue). Must not block and must not throw: it hands the result to the
// RPC layer.
using Completion = absl::AnyInvocable<void(absl::Status status, InferenceResult result)>;

// Smallest priority level is served first. Level 0 is what requests get when they name no
// priority; it sorts after every explicit level (1 = highest), as in Triton's schedule policy.
inline constexpr int64_t kDefaultPriorityLevel = 0;

class InferenceRequest {
 public:
  InferenceRequest(std::vector<float> input, int64_t num_rows, bool want_routing,
                   absl::Time deadline, int64_t priority_level, Completion completion)
      : input_(std::move(input)),
        num_rows_(num_rows),
        want_routing_(want_routing),
        deadline_(deadline),
        priority_level_(priority_level),
        completion_(std::move(completion)) {
    live_count_.fetch_add(1, std::memory_order_relaxed);
  }
  ~InferenceRequest() { live_count_.fetch_sub(1, std::memory_order_relaxed); }

  InferenceRequest(const InferenceRequest&) = delete;
  InferenceRequest& operator=(const InferenceRequest&) = delete;

  const std::vector<float>& input() const { return input_; }
  int64_t num_rows() const { return num_rows_; }
  bool want_routing() const { return want_routing_; }
  absl::Time deadline() const { return deadline_; }
  int64_t priority_level() const { return priority_level_; }
  absl::Time enqueue_time() const { return enqueue_time_; }
  void set_enqueue_time(absl::Time time) { enqueue_time_ = time; }

  // Runs the completion; later calls do nothing (a request completes once).
  void Complete(absl::Status status, InferenceResult result) {
    if (completion_) {
      Completion completion = std::move(completion_);
      completion_ = nullptr;
      completion(std::move(status), std::move(result));
    }
  }

  // Requests alive in this process: tests check that every outcome releases its request.
  static int64_t LiveCount() { return live_count_.load(std::memory_order_relaxed); }

 private:
  static inline std::atomic<int64_t> live_count_{0};

  std::vector<float> input_;  // [rows, input_width]
  int64_t num_rows_;
  bool want_routing_;
  absl::Time deadline_;  // absl::InfiniteFuture() when none
  int64_t priority_level_;
  absl::Time enqueue_time_;
  Completion completion_;
};

}  // namespace moe::scheduler
