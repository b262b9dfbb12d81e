// MOE_SANITIZER_BUILD: 1 when this file is compiled with AddressSanitizer or ThreadSanitizer
// (scripts/sanitize.sh), else 0. GCC defines __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__; clang 14
// answers only through __has_feature.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOE_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOE_SANITIZER_BUILD 1
#endif
#endif

#ifndef MOE_SANITIZER_BUILD
#define MOE_SANITIZER_BUILD 0
#endif
