#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/common/logging.h"
#include "server/engine/moe_backend.h"

namespace moe::engine {

std::string_view BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu:
      return "cpu";
    case BackendKind::kCuda:
      return "cuda";
  }
  return "unknown";
}

absl::StatusOr<BackendChoice> ParseBackendChoice(std::string_view text) {
  const std::string lower = absl::AsciiStrToLower(std::string(text));
  if (lower == "auto") return BackendChoice::kAuto;
  if (lower == "cpu") return BackendChoice::kCpu;
  if (lower == "cuda" || lower == "gpu") return BackendChoice::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", std::string(text), "': expected auto, cpu or cuda"));
}

absl::StatusOr<std::unique_ptr<MoEBackend>> CreateBackend(const BackendOptions& options) {
  if (options.choice == BackendChoice::kCpu) return CreateCpuBackend();
  std::string why_none;
  const int devices = CudaDeviceCount(&why_none);
  if (options.choice == BackendChoice::kCuda) {
    if (devices == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("backend cuda requested but no CUDA device is usable: ", why_none));
    }
    return CreateCudaBackend(options);
  }
  if (devices > 0) {
    auto cuda = CreateCudaBackend(options);
    if (cuda.ok()) return cuda;
    common::LogWarning("backend_fallback",
                       {{"backend", "cpu"}, {"reason", std::string(cuda.status().message())}});
    return CreateCpuBackend();
  }
  // An NVIDIA device node without a usable device (driver older than the toolkit, say) is
  // worth a warning; a machine without a GPU is not.
  std::error_code error;
  const bool gpu_present = std::filesystem::exists("/dev/nvidia0", error);
  common::Log(gpu_present ? common::LogLevel::kWarning : common::LogLevel::kInfo,
              "backend_fallback", {{"backend", "cpu"}, {"reason", why_none}});
  return CreateCpuBackend();
}

#ifndef MOE_HAVE_CUDA
absl::StatusOr<std::unique_ptr<MoEBackend>> CreateCudaBackend(const BackendOptions&) {
  return absl::UnimplementedError(
      "this build of moe-serve has no CUDA backend (built without nvcc)");
}

int CudaDeviceCount(std::string* why_none) {
  if (why_none != nullptr) *why_none = "built without CUDA support";
  return 0;
}
#endif

}  // namespace moe::engine
