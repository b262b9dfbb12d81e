// How `moe-client infer` shows an answer: a table for people or one JSON object for programs;
// every output value of each row, or the top N classes (named by the model's output labels when
// it has them); with the routing outputs, each row's chosen experts and their weights per MoE
// layer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct InferDisplay {
  std::string format = "table";     // "table" or "json"
  std::string output_name;          // the model's output; empty: the first non-routing output
  int top = 0;                      // > 0: the N highest values per row instead of all
  bool show_routing = false;        // needs routing_expert_ids and routing_weights in the answer
  std::vector<std::string> labels;  // the model's output labels, by index (may be empty)
  std::optional<uint64_t> seed;     // the seed of random input rows, to print
};

// The text to print (ending with a newline). FAILED_PRECONDITION when the answer lacks an
// output it needs or its shapes do not agree.
absl::StatusOr<std::string> FormatInferResult(const InferResult& result,
                                              const InferDisplay& display);

}  // namespace moe::client::cli
