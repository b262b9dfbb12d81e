#include "client/cli/stream_timing.h"

#include <cstddef>

namespace moe::client::cli {

StreamTiming AccountStream(const std::vector<TokenArrival>& arrivals, double end_ms) {
  StreamTiming timing;
  timing.e2e_ms = end_ms;
  bool first = true;
  double previous_ms = 0;
  for (const TokenArrival& arrival : arrivals) {
    if (arrival.tokens <= 0) continue;
    timing.tokens += arrival.tokens;
    if (first) {
      timing.ttft_ms = arrival.ms;
      first = false;
    } else {
      const double per_token = (arrival.ms - previous_ms) / static_cast<double>(arrival.tokens);
      timing.itl_ms.insert(timing.itl_ms.end(), static_cast<size_t>(arrival.tokens), per_token);
    }
    previous_ms = arrival.ms;
  }
  if (timing.tokens >= 2) {
    timing.tpot_ms = (end_ms - timing.ttft_ms) / static_cast<double>(timing.tokens - 1);
  }
  return timing;
}

}  // namespace moe::client::cli
