// ThreadSanitizer builds only (MOE_SANITIZE=thread; cmake/sanitizers.cmake links this into every
// executable): tells TSan about two happens-before edges gRPC's API promises and makes inside
// libgrpc and libgrpc++, where TSan cannot see them: a batch of operations started on one thread
// (grpc_call_start_batch) completes, with its tag, on another; and a callback-API server call
// ends (OnDone) after everything that held a reference to it let go.
//
// gRPC's C++ layer (grpcpp headers) is compiled, instrumented, into our binaries: op sets,
// completion tags, the callback API's call objects, our reactors and callbacks. The completion
// travels through libgrpc's lock-free queues and closures (not instrumented), so without this
// TSan reports every access made when a batch completes (gRPC's FinishOp, our callbacks)
// against the setup before it on the thread that started the batch.
//
// Like tsan_absl_sync.cc these definitions in the executable come before libgrpc's for every
// caller (libgrpc++ included) and call the real ones (dlsym RTLD_NEXT):
//   - grpc_call_start_batch releases on the tag before the batch starts and again once it has
//     returned: libgrpc writes into the batch's ops (a status string, when a call fails at
//     once) inside grpc_call_start_batch itself;
//   - grpc_cq_end_op, which posts a batch's completion (libgrpc calls it through its PLT, so
//     the executable's definition comes first there too), releases on the tag. It runs on
//     whichever thread did the work: gRPC's pollers are the threads blocked in Next or Pluck,
//     so one client thread waiting on its own call reads the transport for the others on the
//     connection and fills their statuses (a message string built by instrumented string code
//     that the executable interposes) before it posts their completions;
//   - grpc_completion_queue_next/pluck acquire on the tag of the event they return;
//   - a completion that another thread picks up while grpc_call_start_batch is still running
//     waits for it to return (a std::mutex and condition variable, which TSan sees) before the
//     acquire, so those last writes are ordered too. A completion run inline on the starting
//     thread is ordered by program order and does not wait;
//   - grpc_call_cancel and grpc_call_cancel_with_status (ClientContext::TryCancel, on any
//     thread) fail the call's pending batches inside libgrpc, writing their statuses (a message
//     string among them) on the cancelling thread; the completion is then often picked up by
//     another. A cancel releases on one address shared by all calls once it has returned, and
//     every completion handled on another thread first waits for the cancels in flight to
//     return, then acquires on it, as it does on the tag for a batch start;
//   - callback-API tags are grpc_completion_queue_functor objects that libgrpc runs through
//     their functor_run pointer rather than returning: when that pointer is a function of this
//     executable (the grpcpp tags' StaticRun), it is swapped, before the batch starts, for a
//     trampoline that acquires on the tag and calls the original. Tags whose run function lives
//     in libgrpc++ (its own internal tags) are left alone. A completion-queue tag is an op set,
//     whose first word is a vtable pointer, never code, so the two kinds are told apart by
//     whether that word points into this executable's code;
//   - grpc::internal::ServerCallbackCall::ScheduleOnDone runs on the thread that dropped the
//     call's last reference. The decrements made in grpcpp's inline code (in our binaries) are
//     instrumented acq_rel operations, a release on the counter, but the last one is often made
//     inside libgrpc++, invisible; the interposed ScheduleOnDone acquires on the counter. Its
//     address is fixed by gRPC 1.51's class layout (vptr, two atomic_int), checked below.
#include <dlfcn.h>
#include <elf.h>
#include <grpc/grpc.h>
#include <grpcpp/version_info.h>
#include <link.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"

#if !defined(__SANITIZE_THREAD__)
#error "tsan_grpc_sync.cc belongs in ThreadSanitizer builds only (MOE_SANITIZE=thread)"
#endif

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

template <typename Fn>
Fn Real(const char* name) {
  void* function = dlsym(RTLD_NEXT, name);
  if (function == nullptr) {
    std::fprintf(stderr, "tsan_grpc_sync: %s not found in the libraries after the executable\n",
                 name);
    std::abort();
  }
  return reinterpret_cast<Fn>(function);
}

// The executable's code: [begin, end) of its executable PT_LOAD segment.
struct CodeRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

CodeRange ExecutableCode() {
  CodeRange range;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* out = static_cast<CodeRange*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& header = info->dlpi_phdr[i];
          if (header.p_type == PT_LOAD && (header.p_flags & PF_X) != 0) {
            out->begin = info->dlpi_addr + header.p_vaddr;
            out->end = out->begin + header.p_memsz;
            break;
          }
        }
        return 1;  // the first object is the executable
      },
      &range);
  return range;
}

// Tags whose grpc_call_start_batch has not returned yet, with how many such calls run.
std::mutex g_starting_mu;
std::condition_variable g_started;
std::unordered_map<const void*, int>& Starting() {
  static auto* starting = new std::unordered_map<const void*, int>();
  return *starting;
}
int g_cancelling = 0;             // grpc_call_cancel* calls not returned yet, under g_starting_mu
char g_cancel_sync;               // the address cancels release on and completions acquire on
thread_local int t_starting = 0;  // this thread is inside grpc_call_start_batch or a cancel

void BeginStart(const void* tag) {
  std::lock_guard<std::mutex> lock(g_starting_mu);
  ++Starting()[tag];
}

void EndStart(const void* tag) {
  {
    std::lock_guard<std::mutex> lock(g_starting_mu);
    auto it = Starting().find(tag);
    if (it != Starting().end() && --it->second == 0) Starting().erase(it);
  }
  g_started.notify_all();
}

void BeginCancel() {
  std::lock_guard<std::mutex> lock(g_starting_mu);
  ++g_cancelling;
}

void EndCancel() {
  {
    std::lock_guard<std::mutex> lock(g_starting_mu);
    --g_cancelling;
  }
  g_started.notify_all();
}

// Before a completion of `tag` is handled on another thread: its start and every cancel in
// flight have returned. Then what they wrote happens before the completion's handling.
void AwaitStarted(const void* tag) {
  if (t_starting > 0) return;
  {
    std::unique_lock<std::mutex> lock(g_starting_mu);
    g_started.wait(lock,
                   [tag] { return g_cancelling == 0 && Starting().find(tag) == Starting().end(); });
  }
  __tsan_acquire(&g_cancel_sync);
}

// Runs a cancel as a start: its writes are released for the completions it causes.
template <typename Fn>
grpc_call_error RunCancel(Fn&& cancel) {
  BeginCancel();
  ++t_starting;
  const grpc_call_error result = cancel();
  --t_starting;
  __tsan_release(&g_cancel_sync);
  EndCancel();
  return result;
}

using RunFunction = void (*)(grpc_completion_queue_functor*, int);

// The original run functions seen, one trampoline per slot (a handful: one per grpcpp tag
// class). Relaxed: a slot is written once, before the batch whose completion reads it starts.
constexpr int kSlots = 8;
std::atomic<RunFunction> g_original_run[kSlots];

template <int N>
void Trampoline(grpc_completion_queue_functor* functor, int ok) {
  AwaitStarted(functor);
  __tsan_acquire(functor);
  g_original_run[N].load(std::memory_order_relaxed)(functor, ok);
}

template <int... N>
constexpr RunFunction kTrampolines[] = {&Trampoline<N>...};
constexpr RunFunction const* kTrampoline = kTrampolines<0, 1, 2, 3, 4, 5, 6, 7>;

bool IsTrampoline(RunFunction run) {
  for (int i = 0; i < kSlots; ++i) {
    if (run == kTrampoline[i]) return true;
  }
  return false;
}

// The trampoline that runs `original`, or null when every slot holds another function.
RunFunction TrampolineFor(RunFunction original) {
  for (int i = 0; i < kSlots; ++i) {
    RunFunction seen = g_original_run[i].load(std::memory_order_relaxed);
    if (seen == nullptr &&
        g_original_run[i].compare_exchange_strong(seen, original, std::memory_order_relaxed)) {
      return kTrampoline[i];
    }
    if (seen == original) return kTrampoline[i];
  }
  return nullptr;
}

void WrapIfOurFunctor(void* tag) {
  static const CodeRange code = ExecutableCode();
  auto* functor = static_cast<grpc_completion_queue_functor*>(tag);
  const RunFunction run = functor->functor_run;
  const auto address = reinterpret_cast<uintptr_t>(run);
  if (address < code.begin || address >= code.end || IsTrampoline(run)) return;
  if (RunFunction trampoline = TrampolineFor(run); trampoline != nullptr) {
    functor->functor_run = trampoline;
  }
}

}  // namespace

extern "C" grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops,
                                                 void* tag, void* reserved) {
  static const auto real =
      Real<grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*)>(
          "grpc_call_start_batch");
  if (tag == nullptr) return real(call, ops, nops, tag, reserved);
  WrapIfOurFunctor(tag);
  BeginStart(tag);
  __tsan_release(tag);
  ++t_starting;
  const grpc_call_error result = real(call, ops, nops, tag, reserved);
  --t_starting;
  __tsan_release(tag);
  EndStart(tag);
  return result;
}

extern "C" grpc_call_error grpc_call_cancel(grpc_call* call, void* reserved) {
  static const auto real = Real<grpc_call_error (*)(grpc_call*, void*)>("grpc_call_cancel");
  return RunCancel([&] { return real(call, reserved); });
}

extern "C" grpc_call_error grpc_call_cancel_with_status(grpc_call* call, grpc_status_code status,
                                                        const char* description, void* reserved) {
  static const auto real =
      Real<grpc_call_error (*)(grpc_call*, grpc_status_code, const char*, void*)>(
          "grpc_call_cancel_with_status");
  return RunCancel([&] { return real(call, status, description, reserved); });
}

extern "C" grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                                 void* reserved) {
  static const auto real = Real<grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*)>(
      "grpc_completion_queue_next");
  grpc_event event = real(cq, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) {
    AwaitStarted(event.tag);
    __tsan_acquire(event.tag);
  }
  return event;
}

extern "C" grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag,
                                                  gpr_timespec deadline, void* reserved) {
  static const auto real = Real<grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*)>(
      "grpc_completion_queue_pluck");
  grpc_event event = real(cq, tag, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) {
    AwaitStarted(event.tag);
    __tsan_acquire(event.tag);
  }
  return event;
}

// grpc_cq_end_op (src/core/lib/surface/completion_queue.h, gRPC 1.51) is a C++ function taking
// an absl::Status by value; its mangled name pins the exact signature and Debian's abseil inline
// namespace, and Real() aborts if libgrpc no longer has it.
struct grpc_cq_completion;
using CqDone = void (*)(void* done_arg, grpc_cq_completion* storage);
using CqEndOp = void(grpc_completion_queue* cq, void* tag, absl::Status error, CqDone done,
                     void* done_arg, grpc_cq_completion* storage, bool internal);
#define MOE_GRPC_CQ_END_OP                                                              \
  "_Z14grpc_cq_end_opP21grpc_completion_queuePvN4absl7debian36StatusEPFvS1_P18grpc_cq_" \
  "completionES1_S6_b"

extern "C" CqEndOp MoeCqEndOp __asm__(MOE_GRPC_CQ_END_OP);

extern "C" void MoeCqEndOp(grpc_completion_queue* cq, void* tag, absl::Status error, CqDone done,
                           void* done_arg, grpc_cq_completion* storage, bool internal) {
  static const auto real = Real<CqEndOp*>(MOE_GRPC_CQ_END_OP);
  if (tag != nullptr) __tsan_release(tag);
  real(cq, tag, std::move(error), done, done_arg, storage, internal);
}

// grpc::internal::ServerCallbackCall (grpcpp/support/server_callback.h, gRPC 1.51): a vtable
// pointer, then atomic_int on_cancel_conditions_remaining_, then atomic_int
// callbacks_outstanding_, the reference count.
static_assert(GRPC_CPP_VERSION_MAJOR == 1 && GRPC_CPP_VERSION_MINOR == 51,
              "tsan_grpc_sync.cc knows gRPC 1.51's ServerCallbackCall layout: check it");
constexpr size_t kCallbacksOutstandingOffset = sizeof(void*) + sizeof(std::atomic_int);

extern "C" void MoeScheduleOnDone(void* call, bool inline_ondone) __asm__(
    "_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");

extern "C" void MoeScheduleOnDone(void* call, bool inline_ondone) {
  static const auto real =
      Real<void (*)(void*, bool)>("_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");
  __tsan_acquire(static_cast<char*>(call) + kCallbacksOutstandingOffset);
  real(call, inline_ondone);
}
