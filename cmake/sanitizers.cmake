# Sanitizer builds: MOE_SANITIZE=address,undefined (ASan + UBSan, LeakSanitizer included) or
# MOE_SANITIZE=thread (TSan) instruments every C/C++ target of the tree. scripts/sanitize.sh
# configures, builds and runs the tests this way; docs/RELIABILITY.md says what runs and why.
# Use a build directory of its own: the flags change every object.
set(MOE_SANITIZE "" CACHE STRING "Sanitizers for every target: empty, address,undefined, or thread")
set_property(CACHE MOE_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")

if(MOE_SANITIZE)
  string(REPLACE "," ";" moe_sanitizers "${MOE_SANITIZE}")
  foreach(sanitizer IN LISTS moe_sanitizers)
    if(NOT sanitizer MATCHES "^(address|undefined|thread)$")
      message(FATAL_ERROR "MOE_SANITIZE=${MOE_SANITIZE}: unknown sanitizer '${sanitizer}' "
        "(use address,undefined or thread)")
    endif()
  endforeach()
  if("thread" IN_LIST moe_sanitizers AND "address" IN_LIST moe_sanitizers)
    message(FATAL_ERROR "MOE_SANITIZE=${MOE_SANITIZE}: ThreadSanitizer cannot be combined with "
      "AddressSanitizer; use two build directories (scripts/sanitize.sh asan|tsan)")
  endif()
  # The fuzz targets' instrumentation (ASan + UBSan + libFuzzer coverage) is the ASan job's
  # plus coverage, so one clang tree serves both (scripts/sanitize.sh asan, scripts/fuzz.sh);
  # TSan cannot be combined with it.
  if(MOE_BUILD_FUZZERS AND "thread" IN_LIST moe_sanitizers)
    message(FATAL_ERROR "MOE_SANITIZE=thread cannot be combined with MOE_BUILD_FUZZERS (ASan): "
      "use a build directory of its own")
  endif()
  # Device code is not instrumented, and the CUDA runtime's fixed mappings clash with ASan's
  # shadow memory (it needs protect_shadow_gap=0) and TSan's address-space layout: sanitizer
  # builds are CPU-only. A normal variable, so the cache keeps what the user asked for.
  if(MOE_CUDA STREQUAL "ON")
    message(WARNING "MOE_SANITIZE=${MOE_SANITIZE} builds without the CUDA backend: "
      "MOE_CUDA=ON is ignored in this build directory")
  endif()
  set(MOE_CUDA OFF)

  # -O1: fast enough to run the integration tests, close enough to the source for the reports.
  set(MOE_SANITIZE_FLAGS -fsanitize=${MOE_SANITIZE} -fno-omit-frame-pointer -g -O1)
  if("undefined" IN_LIST moe_sanitizers)
    # A UBSan report aborts the program (the test fails) instead of printing and going on.
    list(APPEND MOE_SANITIZE_FLAGS -fno-sanitize-recover=all)
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${MOE_SANITIZE_FLAGS}>")
  add_link_options(-fsanitize=${MOE_SANITIZE})
  if("undefined" IN_LIST moe_sanitizers AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC's UBSan runtime is a library of its own beside libasan; shared, it ignores
    # UBSAN_OPTIONS=log_path (the two runtimes share the report-path symbol), so a report of
    # a server that a test started would only reach that server's discarded stderr. Linked
    # statically it writes its reports where log_path says.
    add_link_options(-static-libubsan)
  endif()
  message(STATUS "moe-serve: sanitizers ${MOE_SANITIZE} on every target: ${MOE_SANITIZE_FLAGS}")

  if("thread" IN_LIST moe_sanitizers)
    # Libraries not built with TSan synchronize in ways it cannot see. Every executable gets
    # tests/sanitizers/tsan_absl_sync.cc (Debian's abseil: absl::Mutex & co., without which
    # every ABSL_GUARDED_BY member would look racy) and tests/sanitizers/tsan_grpc_sync.cc
    # (gRPC: a batch started on one thread completes on another), which interpose those
    # libraries' functions and tell TSan the happens-before edges they make (see the files).
    # They are two objects in a static library that every target links (libraries pass it on
    # to the executables); --undefined pulls both into every executable from the first place
    # the library appears on the link line, ahead of the shared libraries they interpose.
    # (BUILD_INTERFACE: not part of the installed client package; scripts/sanitize.sh links it
    # into the package test's consumer itself.)
    add_library(moe_tsan_sync STATIC
      ${PROJECT_SOURCE_DIR}/tests/sanitizers/tsan_absl_sync.cc
      ${PROJECT_SOURCE_DIR}/tests/sanitizers/tsan_grpc_sync.cc)
    target_link_libraries(moe_tsan_sync PRIVATE ${CMAKE_DL_LIBS})
    link_libraries("$<BUILD_INTERFACE:moe_tsan_sync>")
    add_link_options("LINKER:--undefined=_ZN4absl7debian35Mutex4LockEv"
      "LINKER:--undefined=grpc_call_start_batch")
  endif()
endif()
