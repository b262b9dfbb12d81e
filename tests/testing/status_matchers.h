// gMock matchers for absl::Status / absl::StatusOr (abseil 20220623 ships none).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace moe::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = ::moe::testing::GetStatus(arg);
  if (!status.ok()) *result_listener << "status: " << status.ToString();
  return status.ok();
}

// StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'w'"))
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& status = ::moe::testing::GetStatus(arg);
  *result_listener << "status: " << status.ToString();
  return status.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

// StatusIs(absl::StatusCode::kNotFound): any message.
MATCHER_P(StatusIs, code, "") {
  const absl::Status& status = ::moe::testing::GetStatus(arg);
  *result_listener << "status: " << status.ToString();
  return status.code() == code;
}

}  // namespace moe::testing

#define MOE_ASSERT_OK(expr) ASSERT_THAT((expr), ::moe::testing::IsOk())
#define MOE_EXPECT_OK(expr) EXPECT_THAT((expr), ::moe::testing::IsOk())

// MOE_ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
#define MOE_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  MOE_ASSERT_OK_AND_ASSIGN_IMPL_(MOE_TESTING_CONCAT_(moe_statusor_, __LINE__), lhs, rexpr)
#define MOE_TESTING_CONCAT_INNER_(a, b) a##b
#define MOE_TESTING_CONCAT_(a, b) MOE_TESTING_CONCAT_INNER_(a, b)
#define MOE_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr)  \
  auto statusor = (rexpr);                                    \
  ASSERT_TRUE(statusor.ok()) << statusor.status().ToString(); \
  lhs = std::move(statusor).value()
