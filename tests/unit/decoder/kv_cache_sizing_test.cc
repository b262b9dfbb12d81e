// --kv-cache-memory-fraction's arithmetic: a fraction of a device's free memory (a backend that
// reports its memory), of the host's MemAvailable on the CPU backend, and the refusals.
#include "server/engine/decoder/kv_cache_sizing.h"

#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kGiB = uint64_t{1} << 30;

// A device backend that reports fixed memory figures.
class ReportingBackend : public MoEBackend {
 public:
  explicit ReportingBackend(DeviceMemoryUsage usage) : usage_(usage) {}
  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string device_description() const override { return "test device"; }
  absl::StatusOr<DeviceMemoryUsage> DeviceMemory() const override { return usage_; }
  absl::StatusOr<std::unique_ptr<PreparedMoELayer>> PrepareLayer(
      const kernels::MoELayerWeightsView&, const kernels::RouterConfig&) override {
    return absl::UnimplementedError("not for layers");
  }

 private:
  DeviceMemoryUsage usage_;
};

TEST(KvCacheSizingTest, DeviceFractionIsOfWhatIsFree) {
  const ReportingBackend device({.used_bytes = 30 * kGiB, .total_bytes = 80 * kGiB});
  MOE_ASSERT_OK_AND_ASSIGN(const uint64_t bytes, KvCacheBytesForFraction(0.5, device));
  EXPECT_EQ(bytes, 25 * kGiB);
  MOE_ASSERT_OK_AND_ASSIGN(const uint64_t most,
                           KvCacheBytesForFraction(kMaxKvCacheMemoryFraction, device));
  EXPECT_EQ(most, static_cast<uint64_t>(0.95 * 50 * kGiB));
}

TEST(KvCacheSizingTest, FractionsOutOfRangeAndFullDevicesAreRefused) {
  const ReportingBackend device({.used_bytes = 30 * kGiB, .total_bytes = 80 * kGiB});
  for (const double fraction : {0.0, -0.5, 0.96, 1.0, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THAT(KvCacheBytesForFraction(fraction, device),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fraction")))
        << fraction;
  }
  const ReportingBackend full({.used_bytes = 80 * kGiB, .total_bytes = 80 * kGiB});
  EXPECT_THAT(KvCacheBytesForFraction(0.5, full),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("test device")));
}

TEST(KvCacheSizingTest, CpuFractionIsOfTheHostsAvailableMemory) {
  std::ifstream file("/proc/meminfo");
  std::stringstream text;
  text << file.rdbuf();
  MOE_ASSERT_OK_AND_ASSIGN(const uint64_t available, ParseMemAvailable(text.str()));
  const std::unique_ptr<MoEBackend> cpu = CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(const uint64_t bytes, KvCacheBytesForFraction(0.01, *cpu));
  // Available memory moves between the two reads; a tenth either way is plenty.
  EXPECT_GT(bytes, static_cast<uint64_t>(0.009 * static_cast<double>(available)));
  EXPECT_LT(bytes, static_cast<uint64_t>(0.011 * static_cast<double>(available)));
}

TEST(KvCacheSizingTest, MemAvailableIsReadInKibibytes) {
  MOE_ASSERT_OK_AND_ASSIGN(
      const uint64_t bytes,
      ParseMemAvailable("MemTotal:       24554304 kB\nMemFree:         1234 kB\n"
                        "MemAvailable:   20971520 kB\nBuffers:  1 kB\n"));
  EXPECT_EQ(bytes, 20 * kGiB);
  EXPECT_THAT(ParseMemAvailable("MemTotal: 1 kB\n"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ParseMemAvailable("MemAvailable: lots\n"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseMemAvailable("MemAvailable: 12 MB\n"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace moe::engine
