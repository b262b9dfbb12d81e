// A ServableModel for scheduler and API tests: output row r is a fixed function of input row r
// (so a test can check that every request gets its own rows back), routing is derived from the
// row too, and a test can hold batches (to build up a queue) or make the next one fail.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/servable_model.h"

namespace moe::testing {

class FakeModel : public engine::ServableModel {
 public:
  static constexpr int64_t kInputWidth = 4;
  static constexpr int64_t kOutputWidth = 3;
  static constexpr int64_t kLayers = 2;
  static constexpr int kTopK = 2;
  static constexpr int64_t kExperts = 8;

  FakeModel() {
    description_.name = "fake";
    description_.architecture = "FakeModel";
    description_.family = "fake";
    description_.tensor_servable = true;
    description_.input_name = "input";
    description_.input_width = kInputWidth;
    description_.output_name = "logits";
    description_.output_width = kOutputWidth;
    description_.num_moe_layers = kLayers;
    description_.num_layers = kLayers;
    description_.num_experts = kExperts;
    description_.top_k = kTopK;
    description_.hidden_size = kInputWidth;
    description_.activation = "relu";
    description_.backend = "cpu";
    description_.device = "fake";
  }

  // Output row of an input row: [sum, first - last, 2 * first].
  static std::vector<float> Expected(const float* row) {
    float sum = 0;
    for (int64_t i = 0; i < kInputWidth; ++i) sum += row[i];
    return {sum, row[0] - row[kInputWidth - 1], 2 * row[0]};
  }
  // Routing of an input row: expert ids derived from the first value.
  static int32_t ExpectedExpert(const float* row, int64_t layer, int k) {
    const int64_t base = static_cast<int64_t>(row[0] < 0 ? -row[0] : row[0]);
    return static_cast<int32_t>((base + layer * 3 + k) % kExperts);
  }

  const engine::ModelDescription& description() const override { return description_; }

  absl::Status Run(const float* input, int64_t num_rows,
                   const engine::ModelRunOutputs& outputs) override {
    {
      absl::MutexLock lock(&mu_);
      ++batches_started_;
      batch_sizes_.push_back(num_rows);
      for (int64_t r = 0; r < num_rows; ++r) seen_first_values_.push_back(input[r * kInputWidth]);
      auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !held_; };
      mu_.Await(absl::Condition(&released));
      if (batches_started_ == fail_batch_number_) {
        return absl::InternalError("injected engine failure");
      }
    }
    for (int64_t r = 0; r < num_rows; ++r) {
      const std::vector<float> out = Expected(input + r * kInputWidth);
      for (int64_t c = 0; c < kOutputWidth; ++c) outputs.output[r * kOutputWidth + c] = out[c];
      for (int64_t l = 0; l < kLayers; ++l) {
        for (int k = 0; k < kTopK; ++k) {
          const int64_t at = (r * kLayers + l) * kTopK + k;
          if (outputs.topk_ids)
            outputs.topk_ids[at] = ExpectedExpert(input + r * kInputWidth, l, k);
          if (outputs.topk_weights) outputs.topk_weights[at] = k == 0 ? 0.75f : 0.25f;
        }
      }
    }
    return absl::OkStatus();
  }

  // Batches block inside Run until Release().
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  // The `n`-th batch (counting from 1) fails with INTERNAL.
  void FailBatchNumber(int64_t n) {
    absl::MutexLock lock(&mu_);
    fail_batch_number_ = n;
  }
  // Blocks until `n` batches have entered Run.
  void AwaitBatchesStarted(int64_t n) {
    absl::MutexLock lock(&mu_);
    auto started = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return batches_started_ >= n; };
    mu_.Await(absl::Condition(&started));
  }
  std::vector<int64_t> batch_sizes() const {
    absl::MutexLock lock(&mu_);
    return batch_sizes_;
  }
  std::vector<float> seen_first_values() const {
    absl::MutexLock lock(&mu_);
    return seen_first_values_;
  }

 private:
  engine::ModelDescription description_;
  mutable absl::Mutex mu_;
  bool held_ = false;
  int64_t fail_batch_number_ = -1;
  int64_t batches_started_ = 0;
  std::vector<int64_t> batch_sizes_;
  std::vector<float> seen_first_values_;
};

}  // namespace moe::testing
