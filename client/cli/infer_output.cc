#include "client/cli/infer_output.h"

#include <algorithm>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

constexpr char kRoutingIds[] = "routing_expert_ids";
constexpr char kRoutingWeights[] = "routing_weights";

const OutputTensor* FindOutput(const InferResult& result, const std::string& name) {
  for (const OutputTensor& output : result.outputs) {
    if (output.name == name) return &output;
  }
  return nullptr;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// An output's values as doubles (FP32 or INT32), checked against its shape.
absl::StatusOr<std::vector<double>> Values(const OutputTensor& output) {
  int64_t count = 1;
  for (int64_t d : output.shape) count *= d;
  std::vector<double> values;
  if (output.datatype == "INT32") {
    values.assign(output.int32.begin(), output.int32.end());
  } else {
    values.assign(output.fp32.begin(), output.fp32.end());
  }
  if (static_cast<int64_t>(values.size()) != count) {
    return absl::FailedPreconditionError(absl::StrCat("output '", output.name, "' has shape ",
                                                      ShapeText(output.shape), " but ",
                                                      values.size(), " values"));
  }
  return values;
}

// One row's routing: per MoE layer, the experts chosen (highest weight first) and weights.
struct LayerRouting {
  std::vector<int64_t> experts;
  std::vector<double> weights;
};

struct Routing {
  int64_t layers = 0, top_k = 0;
  std::vector<double> ids, weights;  // [rows, layers, top_k]

  std::vector<LayerRouting> Row(int64_t row) const {
    std::vector<LayerRouting> out(layers);
    for (int64_t layer = 0; layer < layers; ++layer) {
      for (int64_t k = 0; k < top_k; ++k) {
        const int64_t at = (row * layers + layer) * top_k + k;
        out[layer].experts.push_back(static_cast<int64_t>(ids[at]));
        out[layer].weights.push_back(weights[at]);
      }
    }
    return out;
  }
};

absl::StatusOr<Routing> ReadRouting(const InferResult& result, int64_t rows) {
  const OutputTensor* ids = FindOutput(result, kRoutingIds);
  const OutputTensor* weights = FindOutput(result, kRoutingWeights);
  if (ids == nullptr || weights == nullptr) {
    return absl::FailedPreconditionError(
        "the answer has no routing_expert_ids / routing_weights outputs (does the server "
        "support the 'routing' request parameter?)");
  }
  if (ids->shape.size() != 3 || ids->shape != weights->shape || ids->shape[0] != rows) {
    return absl::FailedPreconditionError(
        absl::StrCat("routing outputs have shapes ", ShapeText(ids->shape), " and ",
                     ShapeText(weights->shape), "; expected [", rows, ", layers, top_k] both"));
  }
  Routing routing;
  routing.layers = ids->shape[1];
  routing.top_k = ids->shape[2];
  MOE_ASSIGN_OR_RETURN(routing.ids, Values(*ids));
  MOE_ASSIGN_OR_RETURN(routing.weights, Values(*weights));
  return routing;
}

std::string Label(const std::vector<std::string>& labels, int64_t index) {
  return index < static_cast<int64_t>(labels.size()) ? labels[index] : absl::StrCat(index);
}

// The indices of the `n` highest of values[begin, begin + count), highest first (ties: lower
// index first).
std::vector<int64_t> TopIndices(const std::vector<double>& values, int64_t begin, int64_t count,
                                int64_t n) {
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  n = std::min(n, count);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int64_t a, int64_t b) {
    return values[begin + a] > values[begin + b] ||
           (values[begin + a] == values[begin + b] && a < b);
  });
  order.resize(n);
  return order;
}

}  // namespace

absl::StatusOr<std::string> FormatInferResult(const InferResult& result,
                                              const InferDisplay& display) {
  const OutputTensor* output = nullptr;
  if (!display.output_name.empty()) {
    output = FindOutput(result, display.output_name);
  } else {
    for (const OutputTensor& candidate : result.outputs) {
      if (candidate.name != kRoutingIds && candidate.name != kRoutingWeights) {
        output = &candidate;
        break;
      }
    }
  }
  if (output == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the answer has no output '",
                     display.output_name.empty() ? "(any)" : display.output_name, "'"));
  }
  if (output->shape.empty() || output->shape.size() > 2) {
    return absl::FailedPreconditionError(absl::StrCat("output '", output->name, "' has shape ",
                                                      ShapeText(output->shape),
                                                      "; expected [rows, values]"));
  }
  MOE_ASSIGN_OR_RETURN(const std::vector<double> values, Values(*output));
  const int64_t rows = output->shape.size() == 2 ? output->shape[0] : 1;
  const int64_t width = output->shape.back();
  std::optional<Routing> routing;
  if (display.show_routing) {
    MOE_ASSIGN_OR_RETURN(routing, ReadRouting(result, rows));
  }

  if (display.format == "json") {
    nlohmann::json out = {{"model", result.model_name},
                          {"id", result.id},
                          {"output", output->name},
                          {"shape", output->shape}};
    nlohmann::json json_rows = nlohmann::json::array();
    for (int64_t row = 0; row < rows; ++row) {
      nlohmann::json item = {{"row", row}};
      if (display.top > 0) {
        nlohmann::json top = nlohmann::json::array();
        for (int64_t index : TopIndices(values, row * width, width, display.top)) {
          top.push_back({{"index", index},
                         {"label", Label(display.labels, index)},
                         {"value", values[row * width + index]}});
        }
        item["top"] = top;
      } else {
        item["values"] =
            std::vector<double>(values.begin() + row * width, values.begin() + (row + 1) * width);
      }
      if (routing.has_value()) {
        nlohmann::json layers = nlohmann::json::array();
        const std::vector<LayerRouting> row_routing = routing->Row(row);
        for (size_t layer = 0; layer < row_routing.size(); ++layer) {
          layers.push_back({{"layer", layer},
                            {"experts", row_routing[layer].experts},
                            {"weights", row_routing[layer].weights}});
        }
        item["routing"] = layers;
      }
      json_rows.push_back(item);
    }
    out["rows"] = json_rows;
    if (result.queue_us) out["queue_us"] = *result.queue_us;
    if (result.compute_us) out["compute_us"] = *result.compute_us;
    if (result.batch_rows) out["batch_rows"] = *result.batch_rows;
    if (display.seed) out["seed"] = *display.seed;
    return out.dump() + "\n";
  }

  std::string text =
      absl::StrCat(result.model_name, ": ", output->name, " ", ShapeText(output->shape));
  if (!result.id.empty()) absl::StrAppend(&text, ", id ", result.id);
  if (display.top > 0) {
    absl::StrAppend(&text, ", top ", std::min<int64_t>(display.top, width), " per row");
  }
  absl::StrAppend(&text, "\n");
  const int row_digits = static_cast<int>(absl::StrCat(rows - 1).size());
  for (int64_t row = 0; row < rows; ++row) {
    absl::StrAppendFormat(&text, "row %*d:", row_digits, row);
    if (display.top > 0) {
      std::vector<std::string> cells;
      for (int64_t index : TopIndices(values, row * width, width, display.top)) {
        cells.push_back(absl::StrFormat("%s (%.4g)", Label(display.labels, index),
                                        values[row * width + index]));
      }
      absl::StrAppend(&text, " ", absl::StrJoin(cells, ", "), "\n");
    } else {
      for (int64_t i = 0; i < width; ++i) {
        absl::StrAppendFormat(&text, " %.4g", values[row * width + i]);
      }
      absl::StrAppend(&text, "\n");
    }
    if (routing.has_value()) {
      const std::vector<LayerRouting> row_routing = routing->Row(row);
      for (size_t layer = 0; layer < row_routing.size(); ++layer) {
        std::vector<std::string> cells;
        for (size_t k = 0; k < row_routing[layer].experts.size(); ++k) {
          cells.push_back(absl::StrFormat("expert %d (%.3f)", row_routing[layer].experts[k],
                                          row_routing[layer].weights[k]));
        }
        absl::StrAppendFormat(&text, "  %*s layer %d: %s\n", row_digits, "", layer,
                              absl::StrJoin(cells, ", "));
      }
    }
  }
  if (result.queue_us || result.compute_us || result.batch_rows) {
    absl::StrAppend(&text, "server: queue ", result.queue_us.value_or(-1), " us, compute ",
                    result.compute_us.value_or(-1), " us, batch rows ",
                    result.batch_rows.value_or(-1), "\n");
  }
  if (display.seed) {
    absl::StrAppend(&text, "inputs: uniform [0, 1) rows, --seed ", *display.seed, "\n");
  }
  return text;
}

}  // namespace moe::client::cli
