// A backend for testing DecoderModel's device path on a machine without a device: the CPU
// backend's MoE layers, and a DeviceDecoder that records what DecoderModel hands it and writes
// a recognisable pattern as logits (row r of a step: every value r + 0.5).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/decoder/device_decoder.h"
#include "server/engine/moe_backend.h"

namespace moe::testing {

struct FakeDeviceRecord {
  // What CreateDeviceDecoder was given.
  int64_t input_layers = 0;
  int64_t input_moe_layers = 0;
  // Steps the device ran (errors included), and the last one's chunks.
  int steps = 0;
  int64_t last_num_tokens = 0;
  std::vector<int64_t> last_chunk_tokens;
  std::vector<int64_t> last_chunk_starts;
  // AllocateKvPool calls and the cache of the last.
  int allocations = 0;
  const engine::KvCache* allocated_for = nullptr;
  // What the next calls return.
  absl::Status step_status;
  absl::Status allocate_status;
};

class FakeDeviceDecoder : public engine::DeviceDecoder {
 public:
  FakeDeviceDecoder(FakeDeviceRecord* record, int64_t vocab) : record_(record), vocab_(vocab) {}

  absl::Status Step(std::span<const engine::DecoderChunk> chunks, int64_t num_tokens,
                    const engine::DecoderStepOutputs& outputs) override {
    ++record_->steps;
    record_->last_num_tokens = num_tokens;
    record_->last_chunk_tokens.clear();
    record_->last_chunk_starts.clear();
    int64_t rows = 0;
    for (const engine::DecoderChunk& chunk : chunks) {
      record_->last_chunk_tokens.push_back(static_cast<int64_t>(chunk.tokens.size()));
      record_->last_chunk_starts.push_back(chunk.sequence->length());
      rows += chunk.all_logits ? static_cast<int64_t>(chunk.tokens.size()) : 1;
    }
    if (!record_->step_status.ok()) return record_->step_status;
    if (outputs.logits != nullptr) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t v = 0; v < vocab_; ++v) {
          outputs.logits[r * vocab_ + v] = static_cast<float>(r) + 0.5f;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status AllocateKvPool(const engine::KvCache& cache) override {
    ++record_->allocations;
    record_->allocated_for = &cache;
    return record_->allocate_status;
  }

 private:
  FakeDeviceRecord* record_;
  int64_t vocab_;
};

class FakeDeviceBackend : public engine::MoEBackend {
 public:
  explicit FakeDeviceBackend(FakeDeviceRecord* record)
      : record_(record), cpu_(engine::CreateCpuBackend()) {}

  engine::BackendKind kind() const override { return cpu_->kind(); }
  std::string device_description() const override { return "fake device"; }
  absl::StatusOr<engine::DeviceMemoryUsage> DeviceMemory() const override {
    return cpu_->DeviceMemory();
  }
  absl::StatusOr<std::unique_ptr<engine::PreparedMoELayer>> PrepareLayer(
      const kernels::MoELayerWeightsView& host_weights,
      const kernels::RouterConfig& router) override {
    return cpu_->PrepareLayer(host_weights, router);
  }
  absl::StatusOr<std::unique_ptr<engine::DeviceDecoder>> CreateDeviceDecoder(
      const engine::DeviceDecoderInputs& inputs) override {
    record_->input_layers = static_cast<int64_t>(inputs.moe_layers.size());
    record_->input_moe_layers = 0;
    for (const engine::PreparedMoELayer* layer : inputs.moe_layers) {
      if (layer != nullptr) ++record_->input_moe_layers;
    }
    return std::make_unique<FakeDeviceDecoder>(record_, inputs.config->vocab_size);
  }

 private:
  FakeDeviceRecord* record_;
  std::unique_ptr<engine::MoEBackend> cpu_;
};

}  // namespace moe::testing
