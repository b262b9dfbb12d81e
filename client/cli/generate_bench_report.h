// What `moe-client bench --generate` measured, as text for people or one JSON object for
// scripts (bench/ compares continuous and static batching servers with it). Times are in ms
// and client-side: measured from the send of each request.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "client/cli/generate_args.h"
#include "client/cli/latency_stats.h"

namespace moe::client::cli {

struct GenerateBenchReport {
  // The run.
  std::string target;
  std::string model;
  int concurrency = 0;  // streams, each with one request in flight
  int connections = 0;
  uint64_t seed = 0;  // of the workload: prompts and output lengths
  int64_t vocab_size = 0;
  IntRange prompt_len;
  IntRange max_new_tokens;
  bool ignore_eos = true;
  double temperature = 0;
  double warmup_s = 0;

  // Requests started after the warm-up.
  double seconds = 0;  // from the first counted request's send to the last one's end
  int64_t requests_completed = 0;
  int64_t requests_failed = 0;
  std::map<std::string, int64_t> errors;              // gRPC code name -> requests
  std::map<std::string, std::string> error_messages;  // gRPC code name -> its first message
  std::map<std::string, int64_t> finish_reasons;      // "length", "stop" -> completed requests
  int64_t prompt_tokens = 0;                          // of the completed requests
  int64_t output_tokens = 0;                          // tokens received by the completed requests
  int64_t preemptions = 0;                            // as the server reported them
  // Of the completed requests (inter-token latency: one sample per token, stream_timing.h).
  LatencySummary ttft_ms;
  LatencySummary itl_ms;
  LatencySummary tpot_ms;  // requests with at least 2 tokens
  LatencySummary e2e_ms;
  double mean_server_ttft_ms = 0;  // the server's time_to_first_token_seconds, averaged

  double output_tokens_per_second() const { return seconds > 0 ? output_tokens / seconds : 0; }
  double requests_per_second() const { return seconds > 0 ? requests_completed / seconds : 0; }
};

// Several lines.
std::string FormatGenerateText(const GenerateBenchReport& report);
// One line: a JSON object with flat fields (output_tokens_per_second, ttft_p50_ms, ...).
std::string FormatGenerateJson(const GenerateBenchReport& report);

}  // namespace moe::client::cli
