// Status propagation helpers. abseil 20220623 ships neither ABSL_RETURN_IF_ERROR nor
// ASSIGN_OR_RETURN, so the project defines its own once, here.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOE_STATUS_CONCAT_(a, b) MOE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define MOE_RETURN_IF_ERROR(expr)                      \
  do {                                                 \
    ::absl::Status moe_status_tmp_ = (expr);           \
    if (!moe_status_tmp_.ok()) return moe_status_tmp_; \
  } while (0)

// `MOE_ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns the value of an absl::StatusOr or
// returns its error status from the enclosing function.
#define MOE_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOE_ASSIGN_OR_RETURN_IMPL_(MOE_STATUS_CONCAT_(moe_statusor_, __LINE__), lhs, rexpr)

#define MOE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)   \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
