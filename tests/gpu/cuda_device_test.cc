// Device discovery, context, buffers, conversions, timing and the benchmark's ceilings.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/dtype.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

using gpu_testing::CudaTest;
using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

// Runs everywhere: a machine without a device must say why, and creating a context must fail
// with an error rather than crash.
TEST(CudaDeviceCountTest, ZeroDevicesComeWithAReason) {
  std::string why;
  const int count = CudaDeviceCount(&why);
  ASSERT_GE(count, 0);
  if (count == 0) {
    EXPECT_FALSE(why.empty());
    EXPECT_THAT(CudaContext::Create(0),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no CUDA device")));
  } else {
    EXPECT_THAT(CudaContext::Create(count),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
  }
}

using CudaDeviceTest = CudaTest;

TEST(CudaBuildTest, NamesItsArchitectures) {
  // What a context's error names on a device this build cannot run on.
  EXPECT_STRNE(CudaBuildArchitectures(), "");
  EXPECT_STRNE(CudaBuildArchitectures(), "unknown");
}

TEST_F(CudaDeviceTest, DeviceInfoDescribesTheDevice) {
  const CudaDeviceInfo& info = context_->device_info();
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_memory_bytes, 0);
  EXPECT_GT(info.multiprocessor_count, 0);
  // Hopper and Ampere allow well over the 48 KiB every block gets without opting in.
  EXPECT_GT(info.max_shared_memory_per_block_optin, 48 * 1024);
  EXPECT_GE(info.compute_capability_major, 7);
  EXPECT_THAT(info.Describe(), HasSubstr(info.name));
  std::cout << "device: " << info.Describe() << "\n";
}

TEST_F(CudaDeviceTest, UploadAndDownloadRoundToEachDtypeLikeTheHost) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> values = testing::RandomFloats(rng, 1001, 3.0f);
  values[0] = std::nanf("");
  values[1] = INFINITY;
  values[2] = -0.0f;
  values[3] = 1e-6f;     // subnormal in f16
  values[4] = 70000.0f;  // overflows f16
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    auto buffer = DeviceBuffer::Allocate(*context_, values.size() * DTypeSize(dtype));
    ASSERT_THAT(buffer, IsOk());
    ASSERT_THAT(UploadFloats(*context_, values.data(), values.size(), dtype, buffer->data()),
                IsOk());
    std::vector<float> back(values.size(), 0.0f);
    ASSERT_THAT(DownloadFloats(*context_, buffer->data(), dtype, values.size(), back.data()),
                IsOk());
    for (size_t i = 0; i < values.size(); ++i) {
      const float want = gpu_testing::RoundTo(dtype, values[i]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(back[i])) << "element " << i;
      } else {
        uint32_t got_bits, want_bits;
        std::memcpy(&got_bits, &back[i], 4);
        std::memcpy(&want_bits, &want, 4);
        EXPECT_EQ(got_bits, want_bits) << "element " << i << " value " << values[i];
      }
    }
  }
}

TEST_F(CudaDeviceTest, FillRandomNormalIsSeededAndNormal) {
  constexpr int64_t kCount = 1 << 20;
  auto a = DeviceBuffer::Allocate(*context_, kCount * 4);
  auto b = DeviceBuffer::Allocate(*context_, kCount * 4);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_THAT(FillRandomNormal(*context_, a->data(), DType::kF32, kCount, 42, 2.0f), IsOk());
  ASSERT_THAT(FillRandomNormal(*context_, b->data(), DType::kF32, kCount, 42, 2.0f), IsOk());
  std::vector<float> va(kCount), vb(kCount);
  ASSERT_THAT(a->CopyToHost(va.data(), kCount * 4), IsOk());
  ASSERT_THAT(b->CopyToHost(vb.data(), kCount * 4), IsOk());
  EXPECT_EQ(va, vb) << "same seed, same values";
  double sum = 0, sum_sq = 0;
  for (float v : va) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / kCount;
  const double stddev = std::sqrt(sum_sq / kCount - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(stddev, 2.0, 0.02);
  ASSERT_THAT(FillRandomNormal(*context_, b->data(), DType::kF32, kCount, 43, 2.0f), IsOk());
  ASSERT_THAT(b->CopyToHost(vb.data(), kCount * 4), IsOk());
  EXPECT_NE(va, vb) << "another seed, other values";
}

// A failed cudaMalloc is reported once, by its status: the runtime's record of it must not fail
// the next kernel launch (the next step of a server that ran out of memory for one request).
TEST_F(CudaDeviceTest, AFailedAllocationDoesNotFailTheNextLaunch) {
  const size_t too_much = static_cast<size_t>(context_->device_info().total_memory_bytes) * 4;
  EXPECT_THAT(DeviceBuffer::Allocate(*context_, too_much),
              StatusIs(absl::StatusCode::kResourceExhausted));
  auto buffer = DeviceBuffer::Allocate(*context_, 1024 * 4);
  ASSERT_THAT(buffer, IsOk());
  ASSERT_THAT(FillRandomNormal(*context_, buffer->data(), DType::kF32, 1024, 7, 1.0f), IsOk());
  ASSERT_THAT(context_->Synchronize(), IsOk());
}

TEST_F(CudaDeviceTest, BufferCopiesAreBoundsChecked) {
  auto buffer = DeviceBuffer::Allocate(*context_, 64);
  ASSERT_THAT(buffer, IsOk());
  std::vector<uint8_t> host(128, 7);
  EXPECT_THAT(buffer->CopyFromHost(host.data(), 65),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("64 bytes")));
  EXPECT_THAT(buffer->CopyToHost(host.data(), 8, 60),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("offset 60")));
  ASSERT_THAT(buffer->CopyFromHost(host.data(), 64), IsOk());
  ASSERT_THAT(buffer->FillBytes(0xff), IsOk());
  ASSERT_THAT(buffer->CopyToHost(host.data(), 64), IsOk());
  EXPECT_EQ(host[0], 0xff);
  EXPECT_EQ(host[63], 0xff);
  EXPECT_EQ(host[64], 7);
  DeviceBuffer moved = *std::move(buffer);
  EXPECT_EQ(moved.bytes(), 64u);
}

TEST_F(CudaDeviceTest, StreamMarksTimeQueuedWorkWithoutWaiting) {
  auto buffer = DeviceBuffer::Allocate(*context_, 256 << 20);
  ASSERT_THAT(buffer, IsOk());
  auto marks = CudaStreamMarks::Create(*context_, 3);
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ((*marks)->count(), 3);
  EXPECT_THAT((*marks)->Seconds(0, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT((*marks)->Mark(0), IsOk());
  ASSERT_THAT(buffer->FillBytes(1), IsOk());  // 256 MiB written between marks 0 and 1
  ASSERT_THAT((*marks)->Mark(1), IsOk());
  ASSERT_THAT((*marks)->Mark(2), IsOk());  // nothing between marks 1 and 2
  auto filled = (*marks)->Seconds(0, 1);
  ASSERT_THAT(filled, IsOk());
  auto empty = (*marks)->Seconds(1, 2);
  ASSERT_THAT(empty, IsOk());
  EXPECT_GT(*filled, 0.0);
  EXPECT_LT(*filled, 1.0);  // 256 MiB at any current device's bandwidth
  EXPECT_LT(*empty, *filled);
  EXPECT_THAT((*marks)->Mark(3), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT((*marks)->Seconds(-1, 2), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CudaStreamMarks::Create(*context_, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CudaDeviceTest, TimerReturnsOnePositiveTimePerRepeat) {
  auto buffer = DeviceBuffer::Allocate(*context_, 64 << 20);
  ASSERT_THAT(buffer, IsOk());
  auto times = TimeOnStreamMs(
      *context_, [&] { return buffer->FillBytes(1); }, /*warmup=*/1, /*repeats=*/5);
  ASSERT_THAT(times, IsOk());
  ASSERT_EQ(times->size(), 5u);
  for (double ms : *times) EXPECT_GT(ms, 0.0);
  EXPECT_GT(MedianOf(*times), 0.0);
  EXPECT_DOUBLE_EQ(MedianOf({3.0, 1.0, 2.0}), 2.0);
  EXPECT_DOUBLE_EQ(MedianOf({4.0, 1.0, 2.0, 3.0}), 2.5);
}

TEST_F(CudaDeviceTest, CeilingsArePlausible) {
  auto copy = MeasureCopyBandwidth(*context_, size_t{256} << 20, 5);
  ASSERT_THAT(copy, IsOk());
  EXPECT_GT(copy->gigabytes_per_second, 50.0);
  EXPECT_LT(copy->gigabytes_per_second, 20000.0);
  std::cout << "device copy: " << copy->gigabytes_per_second << " GB/s (read + write)\n";
  auto read = MeasureReadBandwidth(*context_, size_t{256} << 20, 5);
  ASSERT_THAT(read, IsOk());
  EXPECT_GT(read->gigabytes_per_second, 50.0);
  EXPECT_LT(read->gigabytes_per_second, 20000.0);
  // Reading alone moves half the bytes of a copy per element of the buffer; it should not take
  // longer per byte than the copy does.
  EXPECT_GT(read->gigabytes_per_second, 0.5 * copy->gigabytes_per_second);
  std::cout << "device read: " << read->gigabytes_per_second << " GB/s (read only)\n";
  EXPECT_THAT(MeasureReadBandwidth(*context_, 1000, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiple of 16")));
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    auto gemm = MeasureDenseGemmRate(*context_, dtype, 4096, 5);
    ASSERT_THAT(gemm, IsOk());
    EXPECT_GT(gemm->teraflops, 1.0) << DTypeName(dtype);
    EXPECT_LT(gemm->teraflops, 10000.0) << DTypeName(dtype);
    std::cout << "dense GEMM " << DTypeName(dtype) << " 4096^3: " << gemm->teraflops
              << " TFLOP/s\n";
  }
  EXPECT_THAT(MeasureDenseGemmRate(*context_, DType::kF32, 256, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("F32")));
}

}  // namespace
}  // namespace moe::kernels
