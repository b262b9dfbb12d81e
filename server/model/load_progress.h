// Progress of reading a checkpoint's weights, reported tensor by tensor to an optional callback
// (the engine turns it into throttled log lines; the loaders do no logging themselves).
#pragma once

#include <cstdint>
#include <functional>

namespace moe::model {

struct LoadProgress {
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

// Called after each tensor is read and packed, on the loading thread. May be empty.
using LoadProgressCallback = std::function<void(const LoadProgress&)>;

// Counts tensors and bytes as a loader copies them and tells the callback.
class LoadProgressTracker {
 public:
  LoadProgressTracker(int64_t tensors_total, uint64_t bytes_total,
                      const LoadProgressCallback& callback)
      : callback_(callback) {
    progress_.tensors_total = tensors_total;
    progress_.bytes_total = bytes_total;
  }

  void TensorDone(uint64_t bytes) {
    ++progress_.tensors_done;
    progress_.bytes_done += bytes;
    if (callback_) callback_(progress_);
  }

  const LoadProgress& progress() const { return progress_; }

 private:
  const LoadProgressCallback& callback_;
  LoadProgress progress_;
};

}  // namespace moe::model
