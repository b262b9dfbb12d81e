// The server's one logger: a line per event, `key=value` fields, a level, UTC timestamps, to
// stderr. Not for per-token hot paths.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace moe::common {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

using LogField = std::pair<std::string_view, std::string>;

// Writes `ts=... level=info event=<event> k1=v1 ...`. Values with spaces, quotes or '=' are
// quoted.
void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});

// Lines below `level` are dropped (default kInfo).
void SetMinLogLevel(LogLevel level);

inline void LogInfo(std::string_view event, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, event, fields);
}
inline void LogWarning(std::string_view event, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarning, event, fields);
}
inline void LogError(std::string_view event, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, event, fields);
}

}  // namespace moe::common
