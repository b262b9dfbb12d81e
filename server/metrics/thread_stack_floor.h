// The smallest stack a thread of this process gets (see thread_stack_floor.cc for why a
// floor is needed under the stacks CivetWeb asks for).
#pragma once

#include <cstddef>

namespace moe::metrics {

inline constexpr size_t kMinimumThreadStack = size_t{1} << 20;  // 1 MiB

// kMinimumThreadStack. The metrics endpoint calls it, which links the interposed
// pthread_attr_setstacksize into every program that serves metrics.
size_t ThreadStackFloor();

}  // namespace moe::metrics
