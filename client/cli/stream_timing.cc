#include "client/cli/stream_timing.h"

#include <cstddef>
#include <utility>

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

void StreamSamples::Add(const StreamTiming& timing) {
  if (timing.tokens > 0) ttft_ms.push_back(timing.ttft_ms);
  itl_ms.insert(itl_ms.end(), timing.itl_ms.begin(), timing.itl_ms.end());
  if (timing.tokens >= 2) tpot_ms.push_back(timing.tpot_ms);
  e2e_ms.push_back(timing.e2e_ms);
}

void StreamSamples::Merge(const StreamSamples& other) {
  for (auto [to, from] : {std::pair{&ttft_ms, &other.ttft_ms},
                          {&itl_ms, &other.itl_ms},
                          {&tpot_ms, &other.tpot_ms},
                          {&e2e_ms, &other.e2e_ms}}) {
    to->insert(to->end(), from->begin(), from->end());
  }
}

}  // namespace moe::client::cli
