// The client-side timing of one generation stream, from the arrival times of its messages:
// time to first token (send to the first message carrying tokens), inter-token latencies, time
// per output token and end-to-end latency.
//
// Inter-token latency: each later message's gap since the message before, shared out over the
// tokens it carries (a message of 3 tokens 30 ms after the previous one gives three samples of
// 10 ms), so that a server that sends several tokens per message is neither rewarded nor
// punished. Tokens that came in the first message have no gap before them: they count towards
// the time to first token only.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::client::cli {

struct TokenArrival {
  double ms = 0;       // since the request was sent
  int64_t tokens = 0;  // tokens the message carried (messages with none are skipped)
};

struct StreamTiming {
  int64_t tokens = 0;          // tokens received in all
  double ttft_ms = 0;          // 0 when no token came
  std::vector<double> itl_ms;  // one sample per token after the first message's
  double tpot_ms = 0;          // (end - first token) / (tokens - 1); 0 for fewer than 2 tokens
  double e2e_ms = 0;           // send to the end of the stream
};

// `arrivals` in order of arrival; `end_ms`: when the stream ended (since the send).
StreamTiming AccountStream(const std::vector<TokenArrival>& arrivals, double end_ms);

// The latency samples of many streams, as the generation reports summarise them: TTFT of each
// stream that got a token, every inter-token gap, TPOT of each stream of 2 or more tokens, and
// every stream's end-to-end time.
struct StreamSamples {
  std::vector<double> ttft_ms, itl_ms, tpot_ms, e2e_ms;

  void Add(const StreamTiming& timing);
  void Merge(const StreamSamples& other);
};

}  // namespace moe::client::cli
