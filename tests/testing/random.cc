#include "tests/testing/random.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace moe::testing {

uint64_t FreshSeed() {
  if (const char* env = std::getenv("MOE_TEST_SEED"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const uint64_t seed = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') return seed;
    std::fprintf(stderr, "MOE_TEST_SEED='%s' is not a decimal number; using a fresh seed\n", env);
  }
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) | device();
}

}  // namespace moe::testing
