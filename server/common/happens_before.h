// Happens-before edges that ThreadSanitizer cannot see for itself because a library it does not
// instrument makes them: gRPC runs a reactor's OnDone only after its OnCancel has returned, but
// orders the two inside libgrpc++. HappensBefore(key) on one thread and a later
// HappensAfter(key) on another tell TSan so (tests/sanitizers/ covers gRPC's other edges). They
// compile to nothing in other builds.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define MOE_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOE_THREAD_SANITIZER 1
#endif
#endif

#ifdef MOE_THREAD_SANITIZER
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace moe::common {

// What this thread did so far is visible to a thread that calls HappensAfter(key) afterwards.
inline void HappensBefore([[maybe_unused]] const void* key) {
#ifdef MOE_THREAD_SANITIZER
  __tsan_release(const_cast<void*>(key));
#endif
}

inline void HappensAfter([[maybe_unused]] const void* key) {
#ifdef MOE_THREAD_SANITIZER
  __tsan_acquire(const_cast<void*>(key));
#endif
}

}  // namespace moe::common
