// Lock annotations in the style of LevelDB's port/thread_annotations.h: Clang's thread-safety
// analysis checks them; other compilers see empty macros, so they still document which lock guards
// which member.
//
// Thread-safety: macros only.
#pragma once

#if defined(__clang__)
#define STRATA_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define STRATA_THREAD_ANNOTATION_(x)
#endif

#define GUARDED_BY(x) STRATA_THREAD_ANNOTATION_(guarded_by(x))
#define PT_GUARDED_BY(x) STRATA_THREAD_ANNOTATION_(pt_guarded_by(x))
#define REQUIRES_LOCK(...) STRATA_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) STRATA_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define CAPABILITY(x) STRATA_THREAD_ANNOTATION_(capability(x))
#define ACQUIRE(...) STRATA_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define RELEASE(...) STRATA_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS STRATA_THREAD_ANNOTATION_(no_thread_safety_analysis)
