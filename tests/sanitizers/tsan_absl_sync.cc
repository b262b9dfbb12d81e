// ThreadSanitizer builds only (MOE_SANITIZE=thread; cmake/sanitizers.cmake links this into every
// executable): makes abseil's synchronization, and absl::Status's reference count, visible to
// TSan.
//
// Debian's libabsl_synchronization.so is built without TSan, so the annotations abseil has in
// absl::Mutex are compiled out and its lock words and futex waits are invisible: TSan would see
// no happens-before edge between an Unlock and the next Lock and report every ABSL_GUARDED_BY
// member as a race. gRPC's own mutexes and condition variables are absl::Mutex/absl::CondVar
// too (grpc_core::Mutex, gpr_mu), so the hand-offs between gRPC's threads and ours would be
// invisible as well.
//
// The functions below are defined in the executable, which the dynamic linker searches before
// any shared library, so they interpose abseil's for every caller in the process: our code,
// libgrpc, libgpr, and libabsl_synchronization itself (its internal calls go through the PLT).
// Each calls the real function (dlsym RTLD_NEXT) and tells TSan what it did as
// acquire/release on the mutex's address: a lock acquires, an unlock releases, a wait releases
// before and acquires after; a Notification releases in Notify and acquires when a wait
// returns notified. Those are exactly the edges the real primitives make, no more (reader locks
// are the one approximation: ReaderUnlock releases to later readers too).
//
// Mutex::Unlock, Await and LockWhen evaluate absl::Condition functions (our lambdas, which are
// instrumented) inside the real call, sometimes on the unlocking thread for another waiter;
// they run under the real lock but after our release annotation, so their reads are ignored
// (__tsan_ignore_thread_begin/end: memory accesses only, synchronization is still seen).
//
// The mangled names are those of Debian 12's abseil 20220623 (inline namespace "debian3"); the
// static_assert below stops the build on any other abseil instead of silently interposing
// nothing. A name that does not resolve aborts the program with a message.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "absl/base/options.h"
#include "absl/status/status.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if !defined(__SANITIZE_THREAD__)
#error "tsan_absl_sync.cc belongs in ThreadSanitizer builds only (MOE_SANITIZE=thread)"
#endif

#define MOE_STRINGIFY_INNER(x) #x
#define MOE_STRINGIFY(x) MOE_STRINGIFY_INNER(x)
static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1 &&
                  std::string_view(MOE_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME)) == "debian3",
              "tsan_absl_sync.cc names Debian 12's abseil symbols (absl::debian3::...): update "
              "the mangled names for this abseil (nm -D libabsl_synchronization.so)");

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
}

namespace {

template <typename Fn>
Fn Real(const char* mangled_name) {
  void* function = dlsym(RTLD_NEXT, mangled_name);
  if (function == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in the libraries after the executable\n",
                 mangled_name);
    std::abort();
  }
  return reinterpret_cast<Fn>(function);
}

// Memory accesses inside the real call (Condition functions) are not checked.
class IgnoreAccesses {
 public:
  IgnoreAccesses() { __tsan_ignore_thread_begin(); }
  ~IgnoreAccesses() { __tsan_ignore_thread_end(); }
  IgnoreAccesses(const IgnoreAccesses&) = delete;
  IgnoreAccesses& operator=(const IgnoreAccesses&) = delete;
};

void* Address(const void* object) { return const_cast<void*>(object); }

}  // namespace

// `static const auto real = Real<...>(...)` is resolved on first use: shared libraries' static
// initializers may lock a mutex before this executable's own initializers run.
#define MOE_REAL(type, name) static const auto real = Real<type>(name)

namespace absl {
ABSL_NAMESPACE_BEGIN

// ---- Mutex ----

void Mutex::Lock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  {
    IgnoreAccesses ignore;
    real(this);
  }
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  {
    IgnoreAccesses ignore;
    real(this);
  }
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  MOE_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  bool locked;
  {
    IgnoreAccesses ignore;
    locked = real(this);
  }
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  MOE_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  bool locked;
  {
    IgnoreAccesses ignore;
    locked = real(this);
  }
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::Unlock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  IgnoreAccesses ignore;
  real(this);
}

void Mutex::ReaderUnlock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(this);
  IgnoreAccesses ignore;
  real(this);
}

// LockWhen* hold the lock on return, whether the condition became true or the time ran out.
void Mutex::LockWhen(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  {
    IgnoreAccesses ignore;
    real(this, cond);
  }
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&),
           "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  {
    IgnoreAccesses ignore;
    real(this, cond);
  }
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
           "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, timeout);
  }
  __tsan_acquire(this);
  return result;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
           "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, deadline);
  }
  __tsan_acquire(this);
  return result;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
           "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, timeout);
  }
  __tsan_acquire(this);
  return result;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
           "_ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, deadline);
  }
  __tsan_acquire(this);
  return result;
}

// Await* release the lock while they wait and hold it again on return.
void Mutex::Await(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  {
    IgnoreAccesses ignore;
    real(this, cond);
  }
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
           "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, timeout);
  }
  __tsan_acquire(this);
  return result;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
           "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_release(this);
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, cond, deadline);
  }
  __tsan_acquire(this);
  return result;
}

// ---- CondVar: the wait releases the mutex and holds it again on return ----

void CondVar::Wait(Mutex* mu) {
  MOE_REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  {
    IgnoreAccesses ignore;
    real(this, mu);
  }
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  MOE_REAL(bool (*)(CondVar*, Mutex*, absl::Duration),
           "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, mu, timeout);
  }
  __tsan_acquire(mu);
  return result;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  MOE_REAL(bool (*)(CondVar*, Mutex*, absl::Time),
           "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result = real(this, mu, deadline);
  }
  __tsan_acquire(mu);
  return result;
}

// ---- Notification: the waits return early, without the mutex, once notified ----

void Notification::Notify() {
  MOE_REAL(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

// TSan runs a signal's handler when the thread the kernel gave it to next enters an intercepted
// function; a thread blocked in abseil's futex wait enters none. moe-server's main thread waits
// for its shutdown event here, and the kernel gives SIGTERM to the main thread first, so the
// handler would never run and the server never drain. The wait goes in slices, with an
// intercepted usleep between them that lets a pending signal's handler run.
void Notification::WaitForNotification() const {
  MOE_REAL(bool (*)(const Notification*, absl::Duration),
           "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  while (!real(this, absl::Milliseconds(50))) usleep(0);
  __tsan_acquire(Address(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  MOE_REAL(bool (*)(const Notification*, absl::Duration),
           "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(Address(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  MOE_REAL(bool (*)(const Notification*, absl::Time),
           "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(Address(this));
  return notified;
}

// ---- BlockingCounter: Wait returns once every DecrementCount has happened ----

bool BlockingCounter::DecrementCount() {
  MOE_REAL(bool (*)(BlockingCounter*), "_ZN4absl7debian315BlockingCounter14DecrementCountEv");
  __tsan_release(this);
  return real(this);
}

void BlockingCounter::Wait() {
  MOE_REAL(void (*)(BlockingCounter*), "_ZN4absl7debian315BlockingCounter4WaitEv");
  real(this);
  __tsan_acquire(this);
}

// ---- Barrier: every thread's Block returns after all of them arrived ----

bool Barrier::Block() {
  MOE_REAL(bool (*)(Barrier*), "_ZN4absl7debian37Barrier5BlockEv");
  __tsan_release(this);
  const bool last = real(this);
  __tsan_acquire(this);
  return last;
}

// ---- Status: the reference count of a status held on the heap (one with a message) ----
// Copies increment it in status.h (instrumented), but the decrement and the delete of the last
// reference happen inside libabsl_status, where TSan sees neither the atomic nor the ordering
// it makes. A status copied by one thread and released last by another (a client reading a
// sequence's status, the scheduler then dropping its own copy) would look like a race between
// the copy and the delete. Each release publishes what its thread did with the status and
// takes what earlier releases published, before the real decrement.
void Status::UnrefNonInlined(uintptr_t rep) {
  MOE_REAL(void (*)(uintptr_t), "_ZN4absl7debian36Status15UnrefNonInlinedEm");
  void* counter = reinterpret_cast<void*>(rep - 1);  // the StatusRep, its count first
  __tsan_release(counter);
  __tsan_acquire(counter);
  real(rep);
}

ABSL_NAMESPACE_END
}  // namespace absl
