// `moe-client health`, `models` and `describe`: what the server says about itself and its
// models, as a table (or lines of name and value) or JSON.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "moe/client/client.h"

namespace moe::client::cli {

// ServerLive, ServerReady and grpc.health.v1 Check(`service`); `serving` says whether the check
// answered SERVING.
absl::Status RunHealth(Client& client, const std::string& target, const std::string& service,
                       const std::string& format, std::ostream& out, bool* serving);

// One line per model: name, architecture, experts, top-k, backend, ready.
absl::Status RunModels(Client& client, const std::string& format, std::ostream& out);

// Every field of the model's ModelInfo.
absl::Status RunDescribe(Client& client, const std::string& model, const std::string& format,
                         std::ostream& out);

// The rows of `cells` (the first one the header) as columns padded to their widest cell.
std::string FormatTable(const std::vector<std::vector<std::string>>& cells);

// Every field of `info` (defaults included) as "name  value" lines, or as one JSON object with
// the proto's field names.
std::string FormatModelInfo(const ModelInfo& info, const std::string& format);

}  // namespace moe::client::cli
