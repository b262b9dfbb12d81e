#include "client/cli/info_commands.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

std::string YesNo(bool value) { return value ? "true" : "false"; }

// One field's value as text (repeated fields joined with ", ").
std::string FieldText(const google::protobuf::Message& message,
                      const google::protobuf::FieldDescriptor& field) {
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  using Field = google::protobuf::FieldDescriptor;
  auto one = [&](int index) -> std::string {
    const bool repeated = field.is_repeated();
    switch (field.cpp_type()) {
      case Field::CPPTYPE_STRING:
        return repeated ? reflection.GetRepeatedString(message, &field, index)
                        : reflection.GetString(message, &field);
      case Field::CPPTYPE_BOOL:
        return YesNo(repeated ? reflection.GetRepeatedBool(message, &field, index)
                              : reflection.GetBool(message, &field));
      case Field::CPPTYPE_INT32:
        return absl::StrCat(repeated ? reflection.GetRepeatedInt32(message, &field, index)
                                     : reflection.GetInt32(message, &field));
      case Field::CPPTYPE_INT64:
        return absl::StrCat(repeated ? reflection.GetRepeatedInt64(message, &field, index)
                                     : reflection.GetInt64(message, &field));
      case Field::CPPTYPE_UINT32:
        return absl::StrCat(repeated ? reflection.GetRepeatedUInt32(message, &field, index)
                                     : reflection.GetUInt32(message, &field));
      case Field::CPPTYPE_UINT64:
        return absl::StrCat(repeated ? reflection.GetRepeatedUInt64(message, &field, index)
                                     : reflection.GetUInt64(message, &field));
      case Field::CPPTYPE_DOUBLE:
        return absl::StrCat(repeated ? reflection.GetRepeatedDouble(message, &field, index)
                                     : reflection.GetDouble(message, &field));
      case Field::CPPTYPE_FLOAT:
        return absl::StrCat(repeated ? reflection.GetRepeatedFloat(message, &field, index)
                                     : reflection.GetFloat(message, &field));
      case Field::CPPTYPE_ENUM:
        return repeated ? reflection.GetRepeatedEnum(message, &field, index)->name()
                        : reflection.GetEnum(message, &field)->name();
      case Field::CPPTYPE_MESSAGE:
        return (repeated ? reflection.GetRepeatedMessage(message, &field, index)
                         : reflection.GetMessage(message, &field))
            .ShortDebugString();
    }
    return "";
  };
  if (!field.is_repeated()) return one(0);
  std::vector<std::string> items;
  for (int i = 0; i < reflection.FieldSize(message, &field); ++i) items.push_back(one(i));
  return absl::StrJoin(items, ", ");
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

}  // namespace

std::string FormatTable(const std::vector<std::vector<std::string>>& cells) {
  std::vector<size_t> widths;
  for (const auto& row : cells) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(widths[i] + 2 - row[i].size(), ' ');
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

std::string FormatModelInfo(const ModelInfo& info, const std::string& format) {
  if (format == "json") return ToJson(info) + "\n";
  std::vector<std::vector<std::string>> cells;
  const google::protobuf::Descriptor& descriptor = *info.GetDescriptor();
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const google::protobuf::FieldDescriptor& field = *descriptor.field(i);
    cells.push_back({field.name(), FieldText(info, field)});
  }
  return FormatTable(cells);
}

absl::Status RunHealth(Client& client, const std::string& target, const std::string& service,
                       const std::string& format, std::ostream& out, bool* serving) {
  MOE_ASSIGN_OR_RETURN(const bool live, client.ServerLive());
  MOE_ASSIGN_OR_RETURN(const bool ready, client.ServerReady());
  MOE_ASSIGN_OR_RETURN(const HealthStatus health, client.Health(service));
  *serving = health == HealthStatus::kServing;
  const std::string health_name(HealthStatusName(health));
  if (format == "json") {
    out << nlohmann::json{{"target", target},
                          {"live", live},
                          {"ready", ready},
                          {"service", service},
                          {"health", health_name}}
               .dump()
        << "\n";
    return absl::OkStatus();
  }
  out << FormatTable(
      {{"target", target},
       {"live", YesNo(live)},
       {"ready", YesNo(ready)},
       {"health", absl::StrCat(health_name, " (grpc.health.v1 Check(\"", service, "\"))")}});
  return absl::OkStatus();
}

absl::Status RunModels(Client& client, const std::string& format, std::ostream& out) {
  MOE_ASSIGN_OR_RETURN(const std::vector<ModelInfo> models, client.ListModels());
  if (format == "json") {
    std::vector<std::string> items;
    for (const ModelInfo& info : models) items.push_back(ToJson(info));
    out << "[" << absl::StrJoin(items, ",") << "]\n";
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> cells = {
      {"NAME", "ARCHITECTURE", "EXPERTS", "TOP-K", "BACKEND", "READY"}};
  for (const ModelInfo& info : models) {
    cells.push_back({info.name(), info.architecture(), absl::StrCat(info.num_experts()),
                     absl::StrCat(info.top_k()), info.backend(), YesNo(info.ready())});
  }
  out << FormatTable(cells);
  return absl::OkStatus();
}

absl::Status RunDescribe(Client& client, const std::string& model, const std::string& format,
                         std::ostream& out) {
  MOE_ASSIGN_OR_RETURN(const ModelInfo info, client.DescribeModel(model));
  out << FormatModelInfo(info, format);
  return absl::OkStatus();
}

}  // namespace moe::client::cli
