#include "server/engine/decoder/kv_cache_sizing.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "moe/common/status_macros.h"

namespace moe::engine {
namespace {

absl::StatusOr<uint64_t> HostMemAvailable() {
  std::ifstream file("/proc/meminfo");
  if (!file) return absl::UnavailableError("cannot read /proc/meminfo");
  std::stringstream text;
  text << file.rdbuf();
  return ParseMemAvailable(text.str());
}

}  // namespace

absl::StatusOr<uint64_t> ParseMemAvailable(std::string_view meminfo) {
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(meminfo.data(), meminfo.size()), '\n')) {
    if (!absl::ConsumePrefix(&line, "MemAvailable:")) continue;
    line = absl::StripAsciiWhitespace(line);
    uint64_t kib = 0;
    if (!absl::ConsumeSuffix(&line, "kB") ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib) || kib > (UINT64_MAX >> 10)) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc/meminfo: cannot read the MemAvailable line '", line, "'"));
    }
    return kib << 10;
  }
  return absl::NotFoundError("/proc/meminfo has no MemAvailable line");
}

absl::StatusOr<uint64_t> KvCacheBytesForFraction(double fraction, const MoEBackend& backend) {
  if (!(fraction > 0.0) || fraction > kMaxKvCacheMemoryFraction) {
    return absl::InvalidArgumentError(absl::StrCat("the KV-cache memory fraction must be in (0, ",
                                                   kMaxKvCacheMemoryFraction, "], got ", fraction));
  }
  uint64_t free_bytes = 0;
  std::string where;
  if (backend.kind() == BackendKind::kCpu) {
    MOE_ASSIGN_OR_RETURN(free_bytes, HostMemAvailable());
    where = "the host's available memory";
  } else {
    MOE_ASSIGN_OR_RETURN(const DeviceMemoryUsage usage, backend.DeviceMemory());
    free_bytes = usage.total_bytes > usage.used_bytes ? usage.total_bytes - usage.used_bytes : 0;
    where = absl::StrCat("the free memory of ", backend.device_description());
  }
  const auto bytes = static_cast<uint64_t>(std::floor(fraction * static_cast<double>(free_bytes)));
  if (bytes == 0) {
    return absl::FailedPreconditionError(absl::StrCat("a KV cache of ", fraction, " of ", where,
                                                      " (", free_bytes, " bytes) is empty"));
  }
  return bytes;
}

}  // namespace moe::engine
