#include "tests/testing/random.h"

#include <cstdlib>
#include <string>

namespace moe::testing {

uint64_t FreshSeed() {
  if (const char* env = std::getenv("MOE_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::stoull(env);
  }
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) | device();
}

}  // namespace moe::testing
