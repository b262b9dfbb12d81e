// The dense decoder pieces on the device (moe/kernels/cuda_decoder_ops.h) against their host
// versions (server/engine/decoder/dense_ops.h, rotary_embedding.h) on fresh random inputs, and
// their refusals of bad arguments. Both sides compute in float32 with the same formulas, so
// the bounds are float rounding: relative L2 1e-5 for the SGEMM (its summation order differs
// from the host's), 1e-6 elsewhere; the gather and the float32 add are exact. Skips without a
// device.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/cuda_decoder_ops.h"
#include "moe/kernels/cuda_moe.h"
#include "server/engine/decoder/dense_ops.h"
#include "server/engine/decoder/rotary_embedding.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

constexpr double kGemmTolerance = 1e-5;
constexpr double kElementwiseTolerance = 1e-6;

class CudaDecoderOpsTest : public gpu_testing::CudaTest {
 protected:
  void SetUp() override {
    gpu_testing::CudaTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    seed_ = testing::FreshSeed();
    rng_.seed(seed_);
    std::printf("seed %llu (MOE_TEST_SEED replays)\n", static_cast<unsigned long long>(seed_));
  }

  DeviceBuffer ToDevice(const std::vector<float>& host) {
    auto buffer = DeviceBuffer::Allocate(*context_, host.size() * sizeof(float));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_TRUE(buffer->CopyFromHost(host.data(), host.size() * sizeof(float)).ok());
    return std::move(buffer).value();
  }
  DeviceBuffer ToDevice(const std::vector<int32_t>& host) {
    auto buffer = DeviceBuffer::Allocate(*context_, host.size() * sizeof(int32_t));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_TRUE(buffer->CopyFromHost(host.data(), host.size() * sizeof(int32_t)).ok());
    return std::move(buffer).value();
  }
  std::vector<float> ToHost(const DeviceBuffer& device, size_t count) {
    std::vector<float> host(count);
    EXPECT_TRUE(context_->Synchronize().ok());
    EXPECT_TRUE(device.CopyToHost(host.data(), count * sizeof(float)).ok());
    return host;
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(CudaDecoderOpsTest, LinearWithAndWithoutBiasMatchesTheHost) {
  for (const auto& [n, out, in] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 96, 64}, {7, 160, 96}, {33, 64, 200}}) {
    SCOPED_TRACE(::testing::Message()
                 << "n " << n << " out " << out << " in " << in << " seed " << seed_);
    const std::vector<float> w = testing::RandomFloats(rng_, out * in, 0.1f);
    const std::vector<float> bias = testing::RandomFloats(rng_, out);
    const std::vector<float> x = testing::RandomFloats(rng_, n * in);
    for (const bool with_bias : {false, true}) {
      std::vector<float> want(n * out);
      engine::LinearRows(w.data(), with_bias ? bias.data() : nullptr, out, in, x.data(), n,
                         want.data());
      DeviceBuffer dw = ToDevice(w), db = ToDevice(bias), dx = ToDevice(x);
      DeviceBuffer dy = ToDevice(std::vector<float>(n * out, NAN));
      MOE_ASSERT_OK(CudaLinear(*context_, dw.as<float>(), with_bias ? db.as<float>() : nullptr, out,
                               in, dx.as<float>(), n, dy.as<float>()));
      const std::vector<float> got = ToHost(dy, n * out);
      EXPECT_LT(testing::RelativeL2(got.data(), want.data(), want.size()), kGemmTolerance)
          << "bias " << with_bias;
    }
  }
}

TEST_F(CudaDecoderOpsTest, RmsNormOfRowsGroupsAndGatheredRowsMatchesTheHost) {
  const int64_t tokens = 9, groups = 4, width = 32, stride = groups * width + 8;
  const std::vector<float> x = testing::RandomFloats(rng_, tokens * stride, 2.0f);
  const std::vector<float> weight = testing::RandomFloats(rng_, width);
  DeviceBuffer dx = ToDevice(x), dweight = ToDevice(weight);

  // Every token's groups normalised on their own (per-head q/k norms), written packed.
  std::vector<float> want(tokens * groups * width);
  for (int64_t t = 0; t < tokens; ++t) {
    engine::RmsNormRows(x.data() + t * stride, groups, width, width, weight.data(), 1e-6,
                        want.data() + t * groups * width, width);
  }
  DeviceBuffer dy = ToDevice(std::vector<float>(want.size(), NAN));
  MOE_ASSERT_OK(CudaRmsNorm(*context_, {.x = dx.as<float>(),
                                        .x_stride = stride,
                                        .num_rows = tokens,
                                        .groups = groups,
                                        .width = width,
                                        .weight = dweight.as<float>(),
                                        .eps = 1e-6,
                                        .y = dy.data(),
                                        .y_stride = groups * width}));
  std::vector<float> got = ToHost(dy, want.size());
  EXPECT_LT(testing::RelativeL2(got.data(), want.data(), want.size()), kElementwiseTolerance);

  // Gathered rows (the final norm of the rows whose logits are wanted), one group of the whole
  // width.
  const std::vector<int32_t> rows = {8, 0, 3};
  std::vector<float> want_rows(rows.size() * groups * width);
  std::vector<float> wide_weight;  // [groups * width]: `weight` repeated
  for (int64_t g = 0; g < groups; ++g) {
    wide_weight.insert(wide_weight.end(), weight.begin(), weight.end());
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    engine::RmsNormRows(x.data() + rows[r] * stride, 1, groups * width, stride, wide_weight.data(),
                        1e-5, want_rows.data() + r * groups * width, groups * width);
  }
  DeviceBuffer dwide = ToDevice(wide_weight), drows = ToDevice(rows);
  DeviceBuffer dgathered = ToDevice(std::vector<float>(want_rows.size(), NAN));
  MOE_ASSERT_OK(CudaRmsNorm(*context_, {.x = dx.as<float>(),
                                        .x_stride = stride,
                                        .rows = drows.as<int32_t>(),
                                        .num_rows = static_cast<int64_t>(rows.size()),
                                        .width = groups * width,
                                        .weight = dwide.as<float>(),
                                        .eps = 1e-5,
                                        .y = dgathered.data(),
                                        .y_stride = groups * width}));
  got = ToHost(dgathered, want_rows.size());
  EXPECT_LT(testing::RelativeL2(got.data(), want_rows.data(), want_rows.size()),
            kElementwiseTolerance);

  // bf16 output (the MoE block's input): the float32 result rounded once.
  DeviceBuffer dbf16 = ToDevice(std::vector<float>(tokens * groups * width / 2 + 1, NAN));
  MOE_ASSERT_OK(CudaRmsNorm(*context_, {.x = dx.as<float>(),
                                        .x_stride = stride,
                                        .num_rows = tokens,
                                        .groups = groups,
                                        .width = width,
                                        .weight = dweight.as<float>(),
                                        .eps = 1e-6,
                                        .y = dbf16.data(),
                                        .y_dtype = DType::kBF16,
                                        .y_stride = groups * width}));
  std::vector<float> widened(want.size());
  MOE_ASSERT_OK(DownloadFloats(*context_, dbf16.data(), DType::kBF16,
                               static_cast<int64_t>(want.size()), widened.data()));
  // One bf16 rounding: relative error per element at most 2^-9.
  EXPECT_LT(testing::RelativeL2(widened.data(), want.data(), want.size()), 4e-3);

  // f16 output, the other MoE compute dtype: one rounding, at most 2^-11 per element.
  DeviceBuffer df16 = ToDevice(std::vector<float>(tokens * groups * width / 2 + 1, NAN));
  MOE_ASSERT_OK(CudaRmsNorm(*context_, {.x = dx.as<float>(),
                                        .x_stride = stride,
                                        .num_rows = tokens,
                                        .groups = groups,
                                        .width = width,
                                        .weight = dweight.as<float>(),
                                        .eps = 1e-6,
                                        .y = df16.data(),
                                        .y_dtype = DType::kF16,
                                        .y_stride = groups * width}));
  MOE_ASSERT_OK(DownloadFloats(*context_, df16.data(), DType::kF16,
                               static_cast<int64_t>(want.size()), widened.data()));
  EXPECT_LT(testing::RelativeL2(widened.data(), want.data(), want.size()), 1e-3);

  // In place, per group, inside a wider row (the q/k norms on the qkv projection): the groups
  // normalised where they are, the rest of each row untouched.
  DeviceBuffer dinplace = ToDevice(x);
  MOE_ASSERT_OK(CudaRmsNorm(*context_, {.x = dinplace.as<float>(),
                                        .x_stride = stride,
                                        .num_rows = tokens,
                                        .groups = groups,
                                        .width = width,
                                        .weight = dweight.as<float>(),
                                        .eps = 1e-6,
                                        .y = dinplace.data(),
                                        .y_stride = stride}));
  got = ToHost(dinplace, x.size());
  for (int64_t t = 0; t < tokens; ++t) {
    EXPECT_LT(testing::RelativeL2(got.data() + t * stride, want.data() + t * groups * width,
                                  groups * width),
              kElementwiseTolerance)
        << "token " << t;
    for (int64_t c = groups * width; c < stride; ++c) {
      ASSERT_EQ(got[t * stride + c], x[t * stride + c]) << "token " << t << " column " << c;
    }
  }
}

TEST_F(CudaDecoderOpsTest, RotaryEmbeddingMatchesTheHostAtLongPositions) {
  const int64_t tokens = 6, heads = 3, head_dim = 64, stride = heads * head_dim + 16;
  const double theta = 1e6;
  const std::vector<int32_t> positions = {0, 1, 17, 511, 4095, 32767};
  // Unscaled, and YaRN (frequencies blended, cos/sin scaled) as a Qwen config asks for it.
  model::RopeScaling yarn;
  yarn.type = model::RopeScalingType::kYarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 8192;
  yarn.attention_factor = 0.1 * std::log(4.0) + 1.0;
  for (const model::RopeScaling& scaling : {model::RopeScaling(), yarn}) {
    SCOPED_TRACE(scaling.type == model::RopeScalingType::kYarn ? "yarn" : "unscaled");
    std::vector<float> x = testing::RandomFloats(rng_, tokens * stride);
    const engine::RopeFrequencies frequencies =
        engine::ComputeRopeFrequencies(head_dim, theta, scaling);
    engine::RotaryEmbedding rope(head_dim, frequencies);
    rope.Prepare(32768);
    std::vector<float> want = x;
    for (int64_t t = 0; t < tokens; ++t) rope.Apply(want.data() + t * stride, heads, positions[t]);
    DeviceBuffer dx = ToDevice(x), dpos = ToDevice(positions);
    auto dfreq = DeviceBuffer::Allocate(*context_, frequencies.inv_freq.size() * sizeof(double));
    ASSERT_TRUE(dfreq.ok()) << dfreq.status();
    MOE_ASSERT_OK(dfreq->CopyFromHost(frequencies.inv_freq.data(),
                                      frequencies.inv_freq.size() * sizeof(double)));
    MOE_ASSERT_OK(CudaApplyRotary(*context_, {.x = dx.as<float>(),
                                              .num_tokens = tokens,
                                              .stride = stride,
                                              .num_heads = heads,
                                              .head_dim = head_dim,
                                              .positions = dpos.as<int32_t>(),
                                              .inv_freq = dfreq->as<double>(),
                                              .scale = frequencies.attention_scale}));
    const std::vector<float> got = ToHost(dx, x.size());
    EXPECT_LT(testing::RelativeL2(got.data(), want.data(), want.size()), kElementwiseTolerance);
    // The padding past the heads is untouched.
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = heads * head_dim; c < stride; ++c) {
        ASSERT_EQ(got[t * stride + c], x[t * stride + c]);
      }
    }
  }
}

TEST_F(CudaDecoderOpsTest, EmbeddingSwiGluAndAddMatchTheHost) {
  const int64_t vocab = 50, d = 24, n = 5, f = 40;
  const std::vector<float> table = testing::RandomFloats(rng_, vocab * d);
  const std::vector<int32_t> ids = {3, 49, 0, 3, 17};
  DeviceBuffer dtable = ToDevice(table), dids = ToDevice(ids);
  DeviceBuffer dembedded = ToDevice(std::vector<float>(n * d, NAN));
  MOE_ASSERT_OK(CudaEmbedRows(*context_, dtable.as<float>(), vocab, d, dids.as<int32_t>(), n,
                              dembedded.as<float>()));
  const std::vector<float> embedded = ToHost(dembedded, n * d);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < d; ++c) ASSERT_EQ(embedded[t * d + c], table[ids[t] * d + c]);
  }

  const std::vector<float> h = testing::RandomFloats(rng_, n * 2 * f, 3.0f);
  std::vector<float> want(n * f);
  engine::SwiGluRows(h.data(), n, f, want.data());
  DeviceBuffer dh = ToDevice(h), dact = ToDevice(std::vector<float>(n * f, NAN));
  MOE_ASSERT_OK(CudaSwiGlu(*context_, dh.as<float>(), n, f, dact.as<float>()));
  const std::vector<float> act = ToHost(dact, n * f);
  EXPECT_LT(testing::RelativeL2(act.data(), want.data(), want.size()), kElementwiseTolerance);

  std::vector<float> sum = embedded;
  engine::AddInPlace(sum.data(), table.data(), n * d);
  MOE_ASSERT_OK(
      CudaAddInPlace(*context_, dembedded.as<float>(), dtable.data(), DType::kF32, n * d));
  EXPECT_EQ(ToHost(dembedded, n * d), sum);

  // A bf16 / f16 addend (the MoE block's output): widened exactly, then one float32 add.
  for (const DType dtype : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const std::vector<float> y = testing::RandomFloats(rng_, n * d);
    const std::vector<float> addend = testing::RandomFloats(rng_, n * d);
    DeviceBuffer dy = ToDevice(y);
    DeviceBuffer dnarrow = ToDevice(std::vector<float>(n * d / 2 + 1, NAN));
    MOE_ASSERT_OK(UploadFloats(*context_, addend.data(), n * d, dtype, dnarrow.data()));
    std::vector<float> widened(n * d);
    MOE_ASSERT_OK(DownloadFloats(*context_, dnarrow.data(), dtype, n * d, widened.data()));
    std::vector<float> want_sum = y;
    engine::AddInPlace(want_sum.data(), widened.data(), n * d);
    MOE_ASSERT_OK(CudaAddInPlace(*context_, dy.as<float>(), dnarrow.data(), dtype, n * d));
    EXPECT_EQ(ToHost(dy, n * d), want_sum);
  }
}

TEST_F(CudaDecoderOpsTest, BadArgumentsAreInvalidArgument) {
  DeviceBuffer scratch = ToDevice(std::vector<float>(64, 0.0f));
  float* p = scratch.as<float>();
  using testing::StatusIs;
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(CudaLinear(*context_, p, nullptr, 0, 4, p, 1, p), StatusIs(kInvalid));
  EXPECT_THAT(CudaLinear(*context_, nullptr, nullptr, 4, 4, p, 1, p), StatusIs(kInvalid));
  EXPECT_THAT(
      CudaRmsNorm(
          *context_,
          {.x = p, .x_stride = 2, .num_rows = 1, .width = 4, .weight = p, .y = p, .y_stride = 4}),
      StatusIs(kInvalid));  // stride shorter than a row
  EXPECT_THAT(CudaRmsNorm(*context_, {.x = p,
                                      .x_stride = 4,
                                      .num_rows = 1,
                                      .width = 4,
                                      .weight = p,
                                      .y = p,
                                      .y_dtype = DType::kI8,
                                      .y_stride = 4}),
              StatusIs(kInvalid));
  EXPECT_THAT(CudaApplyRotary(*context_, {.x = p,
                                          .num_tokens = 1,
                                          .stride = 8,
                                          .num_heads = 1,
                                          .head_dim = 7,
                                          .positions = nullptr}),
              StatusIs(kInvalid));  // odd head_dim
  EXPECT_THAT(CudaApplyRotary(*context_, {.x = p,
                                          .num_tokens = 1,
                                          .stride = 8,
                                          .num_heads = 1,
                                          .head_dim = 8,
                                          .positions = reinterpret_cast<const int32_t*>(p),
                                          .inv_freq = nullptr}),
              StatusIs(kInvalid));  // no frequencies
  EXPECT_THAT(CudaEmbedRows(*context_, p, 0, 4, nullptr, 1, p), StatusIs(kInvalid));
  EXPECT_THAT(CudaSwiGlu(*context_, p, 1, 0, p), StatusIs(kInvalid));
  EXPECT_THAT(CudaAddInPlace(*context_, p, p, DType::kF32, -1), StatusIs(kInvalid));
  // Empty work is no work.
  MOE_EXPECT_OK(CudaLinear(*context_, p, nullptr, 4, 4, p, 0, p));
  MOE_EXPECT_OK(CudaEmbedRows(*context_, p, 4, 4, nullptr, 0, p));
}

}  // namespace
}  // namespace moe::kernels
