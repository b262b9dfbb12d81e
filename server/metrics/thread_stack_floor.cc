// A floor under the stack size threads of this process ask for.
//
// prometheus-cpp serves /metrics with CivetWeb, and Debian's CivetWeb starts its threads with a
// stack size fixed when it was compiled (100 KiB). glibc places a new thread's static TLS at
// the top of its stack, and the CUDA libraries linked into a CUDA build bring about 100 KiB of
// it (cuBLASLt alone has 92 KiB), so those threads no longer fit: pthread_create fails with
// EINVAL and the metrics endpoint cannot start. Even without CUDA, what is left of 100 KiB is
// too little for CivetWeb's own error path (an HTTP 404 overflowed it in a test process).
// Every program that links the metrics therefore interposes pthread_attr_setstacksize (an
// executable's definition comes before libc's for every library in the process; the
// moe_metrics target exports it from the executable) and raises requests below
// kMinimumThreadStack to it. Larger requests pass through unchanged; only the virtual size
// grows, pages are committed as they are touched.
#include "server/metrics/thread_stack_floor.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

namespace {

using SetStackSize = int (*)(pthread_attr_t*, size_t);

SetStackSize RealSetStackSize() {
  static const auto real =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real;
}

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) {
  const SetStackSize real = RealSetStackSize();
  if (real == nullptr) return EINVAL;
  return real(attr, std::max(stack_size, moe::metrics::kMinimumThreadStack));
}

namespace moe::metrics {

size_t ThreadStackFloor() { return kMinimumThreadStack; }

}  // namespace moe::metrics
