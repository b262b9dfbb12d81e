#include "server/openmp_wait_policy.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe::server {

void EnsurePassiveOpenMPWaitPolicy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: no /proc, or exec refused. Serving works either way, only with spinning
  // workers; say so once.
  std::fprintf(stderr,
               "moe-server: could not restart with OMP_WAIT_POLICY=PASSIVE (%s); idle "
               "OpenMP workers will spin. Set OMP_WAIT_POLICY=PASSIVE yourself to avoid it.\n",
               std::strerror(errno));
}

}  // namespace moe::server
