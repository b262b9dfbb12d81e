// The MoEMLP engine against the double-precision reference, on fresh random weights and inputs.
#include "server/engine/moe_mlp_model.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "server/engine/moe_mlp_reference.h"
#include "server/model/moe_mlp_weights.h"
#include "tests/testing/moe_mlp_random.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

// float32 engine against the float64 reference: relative L2 error of the outputs and of the
// combine weights. Summation order and float32 rounding give ~1e-6; a wrong term gives ~1e-1.
constexpr double kTolerance = 1e-4;
// Rows whose reference scores have two of the k+1 best experts closer than this may be routed
// differently by float32 without anything being wrong; their ids are not compared (and counted).
constexpr double kNearTie = 1e-5;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Loaded {
  model::MoEMLPConfig config;
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<MoEMLPModel> model;
};

void Build(const model::MoEMLPConfig& config, std::mt19937_64& rng, kernels::DType expert_dtype,
           MoEBackend& backend, Loaded* loaded) {
  loaded->config = config;
  loaded->checkpoint =
      testing::InMemoryCheckpoint(testing::RandomMoEMLPTensors(config, rng, expert_dtype));
  ASSERT_NE(loaded->checkpoint, nullptr);
  MOE_ASSERT_OK_AND_ASSIGN(model::MoEMLPWeights weights,
                           model::LoadMoEMLPWeights(*loaded->checkpoint, config));
  MOE_ASSERT_OK_AND_ASSIGN(loaded->model,
                           MoEMLPModel::Create("test", config, std::move(weights), backend));
}

// Buffers of one run, poisoned before it.
struct RunBuffers {
  RunBuffers(const model::MoEMLPConfig& c, int64_t rows)
      : output(rows * c.output_dim, kNaN),
        ids(rows * c.num_blocks * c.top_k, -1),
        weights(rows * c.num_blocks * c.top_k, kNaN),
        counts(c.num_blocks * c.num_experts, -1) {}
  ModelRunOutputs outputs() { return {output.data(), ids.data(), weights.data(), counts.data()}; }
  std::vector<float> output;
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int64_t> counts;
};

// (activation, rows)
class MoEMLPModelTest : public ::testing::TestWithParam<std::tuple<kernels::Activation, int64_t>> {
};

void CheckAgainstReference(const model::MoEMLPConfig& config, kernels::DType expert_dtype,
                           int64_t rows) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays), "
                                    << kernels::ActivationName(config.activation) << ", " << rows
                                    << " rows, experts " << kernels::DTypeName(expert_dtype));
  std::mt19937_64 rng(seed);
  std::unique_ptr<MoEBackend> backend = CreateCpuBackend();
  Loaded loaded;
  ASSERT_NO_FATAL_FAILURE(Build(config, rng, expert_dtype, *backend, &loaded));
  const std::vector<float> input = testing::RandomFloats(rng, rows * config.input_dim);

  RunBuffers engine(config, rows);
  MOE_ASSERT_OK(loaded.model->Run(input.data(), rows, engine.outputs()));
  RunBuffers reference(config, rows);
  std::vector<double> margins;
  MOE_ASSERT_OK(MoEMLPReferenceForward(config, loaded.model->weights(), input.data(), rows,
                                       reference.outputs(), &margins));

  for (const float v : engine.output) ASSERT_TRUE(std::isfinite(v)) << "engine output not finite";
  const double output_error =
      testing::RelativeL2(engine.output.data(), reference.output.data(), engine.output.size());
  EXPECT_LT(output_error, kTolerance) << "relative L2 of the outputs, tolerance " << kTolerance;

  // Routing: ids exactly the reference's selection (best first) except on near ties. The
  // combine weights and the per-expert counts are compared on the (row, block) pairs without a
  // near tie; a tied pair is left out of both sides alone, not the whole case.
  const int64_t blocks = config.num_blocks;
  const int k = config.top_k;
  int64_t near_ties = 0;
  int64_t compared = 0;
  std::vector<float> engine_weights, reference_weights;
  std::vector<int64_t> engine_counts = engine.counts, reference_counts = reference.counts;
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t b = 0; b < blocks; ++b) {
      if (margins[row * blocks + b] < kNearTie) {
        ++near_ties;
        // Take the tied pair's choices out of both sides' counts.
        for (int s = 0; s < k; ++s) {
          const int64_t slot = (row * blocks + b) * k + s;
          const int32_t engine_id = engine.ids[slot];
          const int32_t reference_id = reference.ids[slot];
          ASSERT_TRUE(engine_id >= 0 && engine_id < config.num_experts)
              << "row " << row << " block " << b << " slot " << s << ": id " << engine_id;
          ASSERT_TRUE(reference_id >= 0 && reference_id < config.num_experts)
              << "row " << row << " block " << b << " slot " << s << ": id " << reference_id;
          --engine_counts[b * config.num_experts + engine_id];
          --reference_counts[b * config.num_experts + reference_id];
        }
        continue;
      }
      ++compared;
      for (int s = 0; s < k; ++s) {
        const int64_t slot = (row * blocks + b) * k + s;
        ASSERT_EQ(engine.ids[slot], reference.ids[slot])
            << "row " << row << " block " << b << " slot " << s;
        engine_weights.push_back(engine.weights[slot]);
        reference_weights.push_back(reference.weights[slot]);
      }
    }
  }
  EXPECT_LE(near_ties, rows * blocks / 10) << "too many near ties to say anything";
  EXPECT_EQ(compared + near_ties, rows * blocks);
  EXPECT_GE(compared * 10, rows * blocks * 9) << "most (row, block) pairs must be compared";
  for (const float w : engine.weights) ASSERT_TRUE(std::isfinite(w)) << "weight not written";
  if (compared > 0) {
    EXPECT_LT(
        testing::RelativeL2(engine_weights.data(), reference_weights.data(), engine_weights.size()),
        kTolerance)
        << "relative L2 of the combine weights of the " << compared
        << " (row, block) pairs without a near tie, tolerance " << kTolerance;
  }
  EXPECT_EQ(engine_counts, reference_counts)
      << "per-expert counts, less the choices of the " << near_ties << " near-tied pairs";
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t sum = 0;
    for (int64_t e = 0; e < config.num_experts; ++e) {
      const int64_t count = engine.counts[b * config.num_experts + e];
      EXPECT_GE(count, 0);
      sum += count;
    }
    EXPECT_EQ(sum, rows * k) << "block " << b << ": every row is routed to top_k experts";
  }
}

TEST_P(MoEMLPModelTest, MatchesReference) {
  const auto [activation, rows] = GetParam();
  CheckAgainstReference(testing::SmallMoEMLPConfig(activation), kernels::DType::kF32, rows);
}

INSTANTIATE_TEST_SUITE_P(ActivationsAndRows, MoEMLPModelTest,
                         ::testing::Combine(::testing::Values(kernels::Activation::kReLU,
                                                              kernels::Activation::kGELU,
                                                              kernels::Activation::kSwiGLU),
                                            ::testing::Values(1, 3, 17, 64)),
                         [](const auto& info) {
                           return std::string(kernels::ActivationName(std::get<0>(info.param))) +
                                  "_" + std::to_string(std::get<1>(info.param)) + "_rows";
                         });

TEST(MoEMLPModelVariantsTest, SigmoidRoutingWithoutRenormalisation) {
  model::MoEMLPConfig config = testing::SmallMoEMLPConfig(kernels::Activation::kSwiGLU);
  config.router_scoring = kernels::ScoringFunc::kSigmoid;
  config.normalize_top_k = false;
  config.top_k = 3;
  CheckAgainstReference(config, kernels::DType::kF32, 33);
}

TEST(MoEMLPModelVariantsTest, OneBlockTopOneManyExperts) {
  model::MoEMLPConfig config = testing::SmallMoEMLPConfig(kernels::Activation::kGELU);
  config.num_blocks = 1;
  config.num_experts = 32;
  config.top_k = 1;
  CheckAgainstReference(config, kernels::DType::kF32, 64);
}

TEST(MoEMLPModelVariantsTest, HalfPrecisionExpertWeights) {
  const model::MoEMLPConfig config = testing::SmallMoEMLPConfig(kernels::Activation::kSwiGLU);
  CheckAgainstReference(config, kernels::DType::kBF16, 17);
  CheckAgainstReference(config, kernels::DType::kF16, 17);
}

class MoEMLPModelBehaviourTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    rng_.seed(seed_);
    backend_ = CreateCpuBackend();
    config_ = testing::SmallMoEMLPConfig(kernels::Activation::kReLU);
    config_.output_labels = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
    config_.input_name = "features";
    ASSERT_NO_FATAL_FAILURE(Build(config_, rng_, kernels::DType::kF32, *backend_, &loaded_));
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<MoEBackend> backend_;
  model::MoEMLPConfig config_;
  Loaded loaded_;
};

TEST_F(MoEMLPModelBehaviourTest, DescribesItself) {
  const ModelDescription& d = loaded_.model->description();
  EXPECT_EQ(d.name, "test");
  EXPECT_EQ(d.architecture, "MoEMLP");
  EXPECT_EQ(d.family, "moe_mlp");
  EXPECT_TRUE(d.tensor_servable);
  EXPECT_TRUE(d.not_servable_reason.empty());
  EXPECT_EQ(d.input_name, "features");
  EXPECT_EQ(d.input_width, config_.input_dim);
  EXPECT_EQ(d.output_name, "logits");
  EXPECT_EQ(d.output_width, config_.output_dim);
  EXPECT_EQ(d.output_labels, config_.output_labels);
  EXPECT_EQ(d.hidden_size, config_.hidden_size);
  EXPECT_EQ(d.num_moe_layers, config_.num_blocks);
  EXPECT_EQ(d.num_layers, config_.num_blocks);
  EXPECT_EQ(d.num_experts, config_.num_experts);
  EXPECT_EQ(d.top_k, config_.top_k);
  EXPECT_EQ(d.expert_ffn_size, config_.expert_ffn_dim);
  EXPECT_EQ(d.activation, "relu");
  EXPECT_EQ(d.weight_dtype, kernels::DType::kF32);
  EXPECT_EQ(d.backend, "cpu");
  EXPECT_EQ(d.device, backend_->device_description());
  EXPECT_EQ(d.weight_bytes, loaded_.checkpoint->total_bytes());
}

TEST_F(MoEMLPModelBehaviourTest, RowsDoNotDependOnTheRestOfTheBatch) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const int64_t rows = 40;
  const std::vector<float> input = testing::RandomFloats(rng_, rows * config_.input_dim);
  RunBuffers full(config_, rows);
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, full.outputs()));
  // A smaller batch after a larger one reuses the workspace; rows 5..9 alone.
  const int64_t first = 5, count = 5;
  RunBuffers part(config_, count);
  MOE_ASSERT_OK(
      loaded_.model->Run(input.data() + first * config_.input_dim, count, part.outputs()));
  EXPECT_LT(testing::RelativeL2(part.output.data(), full.output.data() + first * config_.output_dim,
                                part.output.size()),
            kTolerance)
      << "tolerance " << kTolerance << " (BLAS blocking may differ with the batch size)";
  for (int64_t i = 0; i < count * config_.num_blocks * config_.top_k; ++i) {
    EXPECT_EQ(part.ids[i], full.ids[first * config_.num_blocks * config_.top_k + i]);
  }
}

TEST_F(MoEMLPModelBehaviourTest, RepeatedRunsAreBitIdentical) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const int64_t rows = 64;
  const std::vector<float> input = testing::RandomFloats(rng_, rows * config_.input_dim);
  RunBuffers a(config_, rows);
  RunBuffers b(config_, rows);
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, a.outputs()));
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, b.outputs()));
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.counts, b.counts);
}

TEST_F(MoEMLPModelBehaviourTest, RoutingOutputsAreOptional) {
  const int64_t rows = 9;
  const std::vector<float> input = testing::RandomFloats(rng_, rows * config_.input_dim);
  RunBuffers all(config_, rows);
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, all.outputs()));
  std::vector<float> output_only(rows * config_.output_dim, kNaN);
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, {output_only.data()}));
  EXPECT_EQ(output_only, all.output);
  // Ids alone, weights alone.
  RunBuffers ids_only(config_, rows);
  MOE_ASSERT_OK(loaded_.model->Run(
      input.data(), rows, {ids_only.output.data(), ids_only.ids.data(), nullptr, nullptr}));
  EXPECT_EQ(ids_only.ids, all.ids);
  EXPECT_EQ(ids_only.counts, std::vector<int64_t>(ids_only.counts.size(), -1)) << "untouched";
}

// The figures the metrics read: per-layer counts equal to the routing returned, measured expert
// time exactly for experts that ran (within their layer's time), entropy within [0, ln E] per
// row, and the same results as a pass without them.
TEST_F(MoEMLPModelBehaviourTest, StatisticsDescribeThePassWithoutChangingIt) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const int64_t rows = 50;
  const int64_t layers = config_.num_blocks;
  const int64_t experts = config_.num_experts;
  const std::vector<float> input = testing::RandomFloats(rng_, rows * config_.input_dim);
  RunBuffers plain(config_, rows);
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, plain.outputs()));

  RunBuffers measured(config_, rows);
  std::vector<double> layer_seconds(layers, -1.0);
  std::vector<double> entropy(layers, -1.0);
  std::vector<double> expert_seconds(layers * experts, -1.0);
  ModelRunOutputs outputs = measured.outputs();
  outputs.layer_seconds = layer_seconds.data();
  outputs.gate_entropy_sum = entropy.data();
  outputs.expert_seconds = expert_seconds.data();
  MOE_ASSERT_OK(loaded_.model->Run(input.data(), rows, outputs));

  EXPECT_EQ(measured.output, plain.output) << "a timed pass computes the same thing";
  EXPECT_EQ(measured.ids, plain.ids);
  for (int64_t layer = 0; layer < layers; ++layer) {
    std::vector<int64_t> from_ids(experts, 0);
    for (int64_t row = 0; row < rows; ++row) {
      for (int s = 0; s < config_.top_k; ++s) {
        ++from_ids[measured.ids[(row * layers + layer) * config_.top_k + s]];
      }
    }
    double experts_total = 0.0;
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t cell = layer * experts + e;
      EXPECT_EQ(measured.counts[cell], from_ids[e]) << "layer " << layer << " expert " << e;
      if (from_ids[e] > 0) {
        EXPECT_GT(expert_seconds[cell], 0.0) << "layer " << layer << " expert " << e << " ran";
      } else {
        EXPECT_EQ(expert_seconds[cell], 0.0) << "layer " << layer << " expert " << e << " idle";
      }
      experts_total += expert_seconds[cell];
    }
    EXPECT_GT(layer_seconds[layer], 0.0);
    EXPECT_LE(experts_total, layer_seconds[layer]) << "experts are timed inside their layer";
    EXPECT_GT(entropy[layer], 0.0);
    EXPECT_LE(entropy[layer], rows * std::log(static_cast<double>(experts)) + 1e-9);
  }
}

TEST_F(MoEMLPModelBehaviourTest, ZeroRowsZeroTheCounts) {
  RunBuffers buffers(config_, 0);
  MOE_ASSERT_OK(loaded_.model->Run(nullptr, 0, buffers.outputs()));
  EXPECT_EQ(buffers.counts, std::vector<int64_t>(buffers.counts.size(), 0));
}

TEST_F(MoEMLPModelBehaviourTest, RefusesBadArguments) {
  std::vector<float> output(config_.output_dim);
  const std::vector<float> input(config_.input_dim);
  EXPECT_THAT(loaded_.model->Run(input.data(), -1, {output.data()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(loaded_.model->Run(nullptr, 1, {output.data()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
  EXPECT_THAT(loaded_.model->Run(input.data(), 1, {nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
}

TEST(MoEMLPModelCreateTest, RefusesWeightsOfAnotherConfig) {
  std::mt19937_64 rng(testing::FreshSeed());
  const model::MoEMLPConfig config = testing::SmallMoEMLPConfig(kernels::Activation::kReLU);
  auto checkpoint = testing::InMemoryCheckpoint(testing::RandomMoEMLPTensors(config, rng));
  ASSERT_NE(checkpoint, nullptr);
  MOE_ASSERT_OK_AND_ASSIGN(model::MoEMLPWeights weights,
                           model::LoadMoEMLPWeights(*checkpoint, config));
  model::MoEMLPConfig other = config;
  other.num_blocks = 3;
  std::unique_ptr<MoEBackend> backend = CreateCpuBackend();
  EXPECT_THAT(MoEMLPModel::Create("x", other, std::move(weights), *backend),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not match the config")));
}

}  // namespace
}  // namespace moe::engine
