// The sliding window behind the load gauges: what falls in, what ages out, at slot granularity.
#include "server/metrics/expert_load_window.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::metrics {
namespace {

using ::moe::testing::StatusIs;
using ::testing::DoubleNear;
using ::testing::ElementsAre;

// 2 layers x 3 experts, 60 s in 6 slots of 10 s. Times are seconds after an arbitrary origin
// that falls on a slot boundary.
class ExpertLoadWindowTest : public ::testing::Test {
 protected:
  static absl::Time At(double seconds) {
    return absl::FromUnixSeconds(1'700'000'000) + absl::Seconds(seconds);
  }
  ExpertLoadWindow window_ = ExpertLoadWindow::Create(2, 3, absl::Seconds(60), 6).value();
};

TEST_F(ExpertLoadWindowTest, SumsBatchesInsideTheWindow) {
  const std::vector<int64_t> first = {1, 2, 3, 4, 5, 6};
  const std::vector<int64_t> second = {10, 0, 0, 0, 0, 10};
  const std::vector<double> entropy_first = {0.5, 1.0};
  const std::vector<double> entropy_second = {1.5, 2.0};
  window_.Add(At(0), first, entropy_first, 3);
  window_.Add(At(25), second, entropy_second, 5);
  const ExpertLoadWindow::Totals totals = window_.Sum(At(30));
  EXPECT_THAT(totals.expert_tokens, ElementsAre(11, 2, 3, 4, 5, 16));
  EXPECT_THAT(totals.entropy_sum, ElementsAre(DoubleNear(2.0, 1e-12), DoubleNear(3.0, 1e-12)));
  EXPECT_EQ(totals.entropy_rows, 8);
}

TEST_F(ExpertLoadWindowTest, OldSlotsAgeOut) {
  const std::vector<int64_t> old_batch = {7, 0, 0, 0, 0, 0};
  const std::vector<int64_t> new_batch = {0, 1, 0, 0, 0, 0};
  window_.Add(At(5), old_batch, {}, 1);
  // At 59 s the window holds slots [0 s, 60 s): the batch at 5 s counts.
  EXPECT_EQ(window_.Sum(At(59)).expert_tokens[0], 7);
  // At 60 s it holds [10 s, 70 s): it is out, even before its slot is reused.
  EXPECT_EQ(window_.Sum(At(60)).expert_tokens[0], 0);
  window_.Add(At(61), new_batch, {}, 1);
  EXPECT_THAT(window_.Sum(At(61)).expert_tokens, ElementsAre(0, 1, 0, 0, 0, 0));
  // Long after, nothing is left.
  EXPECT_THAT(window_.Sum(At(500)).expert_tokens, ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST_F(ExpertLoadWindowTest, ReusedSlotForgetsItsOldContents) {
  const std::vector<int64_t> batch = {1, 1, 1, 1, 1, 1};
  const std::vector<double> entropy = {1.0, 1.0};
  window_.Add(At(1), batch, entropy, 2);
  // 60 s later the same ring position is reused for a new slot.
  window_.Add(At(61), batch, entropy, 2);
  const ExpertLoadWindow::Totals totals = window_.Sum(At(61));
  EXPECT_THAT(totals.expert_tokens, ElementsAre(1, 1, 1, 1, 1, 1));
  EXPECT_EQ(totals.entropy_rows, 2);
  EXPECT_THAT(totals.entropy_sum, ElementsAre(DoubleNear(1.0, 1e-12), DoubleNear(1.0, 1e-12)));
}

TEST_F(ExpertLoadWindowTest, BatchesWithoutEntropyDoNotCountRows) {
  const std::vector<int64_t> batch = {1, 0, 0, 0, 0, 1};
  window_.Add(At(3), batch, {}, 4);
  EXPECT_EQ(window_.Sum(At(3)).entropy_rows, 0);
}

TEST(ExpertLoadWindowCreateTest, RefusesShapesAndWindowsThatCannotWork) {
  EXPECT_THAT(ExpertLoadWindow::Create(0, 8, absl::Seconds(60), 12).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ExpertLoadWindow::Create(2, 0, absl::Seconds(60), 12).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ExpertLoadWindow::Create(2, 8, absl::Seconds(60), 0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ExpertLoadWindow::Create(2, 8, absl::Nanoseconds(5), 12).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace moe::metrics
