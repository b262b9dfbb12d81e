// What the scheduler tells the metrics about one forward pass. Plain spans, so that metrics
// depends on no other layer of the server.
#pragma once

#include <cstdint>
#include <span>

namespace moe::metrics {

struct BatchObservation {
  int64_t rows = 0;
  int64_t requests = 0;
  double seconds = 0.0;  // the forward pass
  bool failed = false;   // the engine failed: only `rows`, `requests` and `seconds` are set
  std::span<const int64_t> expert_tokens;  // [layers, experts] assignments per expert
  std::span<const double> layer_seconds;   // [layers] wall time of each MoE block
  std::span<const double> entropy_sum;     // [layers] sum over rows of the gate entropy (nats)
  std::span<const double> expert_seconds;  // [layers, experts] on timed passes, else empty
};

}  // namespace moe::metrics
