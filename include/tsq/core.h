/*
 * libtsq - Two-Step Quantization for low-bit neural networks.
 * core.h: versions, status codes, the context, allocators, logging, info.
 *
 * ABI policy (see docs/abi.md):
 *   - only opaque pointers and fixed-width scalars cross the API; no struct
 *     is ever passed by value and no struct layout is public;
 *   - every call that can fail returns a tsq_status; the only calls that
 *     cannot fail return a plain value (version queries, tsq_status_string)
 *     or nothing (the *_destroy functions, which accept NULL like free());
 *   - status numbers are frozen once released; new ones are only appended;
 *   - a released signature never changes: a changed call gets a _v2 name;
 *   - calls declared under TSQ_EXPERIMENTAL are outside these promises.
 *
 * Threads: libtsq keeps no global mutable state. A handle (context, tensor,
 * quantizer, ...) must not be used by two threads at the same time, but
 * distinct handles may be used from distinct threads at once. A context
 * counts as a handle: creating objects from one context is a use of it.
 * Calls on other handles may still allocate through the context they were
 * made from (e.g. tsq_net_learn_codes, tsq_net_fit_transform), so handles
 * made from one context may be used by several threads at once only with a
 * thread-safe allocator (the default one is); the log callback may then be
 * called from several threads at once. Immutable objects say so in their
 * own documentation.
 *
 * Life cycle of a handle, and where its message lives. A handle is made by
 * a constructor that takes the context (or a parent handle) and an output
 * pointer, and lives until its destroy call, which accepts NULL; the
 * context is destroyed last. Every handle carries one message buffer, part
 * of the handle, allocated with it and freed with it. A call that fails
 * returns a status and writes what was wrong (with the argument, index or
 * section) into the message of the handle it was given, a constructor or
 * loader into the context's; a NULL output pointer is such a failure
 * (TSQ_ERR_NULL with a message), only a NULL handle has no message to
 * carry. A call that succeeds clears the message (one that takes the
 * handle as const may leave an older message in place). The message is the one
 * part of a handle that a call taking it as `const` may change: such a call
 * reads the handle's value and never changes it, but it does record its
 * failure, so, for threads, a const call is a use of the handle like any
 * other. Read the message with the handle's *_errmsg call (the pointer
 * stays valid until the next call on the handle).
 */
#ifndef TSQ_CORE_H
#define TSQ_CORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TSQ_API marks the exported calls. The library is built with hidden
 * visibility; only what carries TSQ_API is exported (and the version script
 * libtsq/libtsq.map further restricts exports to tsq_* names). */
#ifndef TSQ_API
#  if defined(TSQ_BUILDING_LIBRARY) && defined(__GNUC__)
#    define TSQ_API __attribute__((visibility("default")))
#  else
#    define TSQ_API
#  endif
#endif

/* ------------------------------------------------------------------ */
/* Versions                                                            */
/* ------------------------------------------------------------------ */

#define TSQ_VERSION_MAJOR 0
#define TSQ_VERSION_MINOR 1
#define TSQ_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH, so 0.1.0 is 100. */
#define TSQ_VERSION_NUMBER \
    (TSQ_VERSION_MAJOR * 10000 + TSQ_VERSION_MINOR * 100 + TSQ_VERSION_PATCH)
#define TSQ_VERSION_STRING "0.1.0"

/*! tsq_version_number() :
 *  @return the TSQ_VERSION_NUMBER the library was built with. A program can
 *  compare it with the TSQ_VERSION_NUMBER of the header it was compiled
 *  against; the major parts must match. Cannot fail. Thread-safe. */
TSQ_API uint32_t tsq_version_number(void);

/*! tsq_version_string() :
 *  @return the library's version as a static "MAJOR.MINOR.PATCH" string.
 *  Cannot fail. Thread-safe. */
TSQ_API const char *tsq_version_string(void);

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

/* A status is a fixed-width integer; the numbers below are frozen. */
typedef int32_t tsq_status;

enum {
    TSQ_OK = 0,                /* success */
    TSQ_ERR_NULL = 1,          /* a required pointer argument was NULL */
    TSQ_ERR_INVALID = 2,       /* an argument is out of its documented range */
    TSQ_ERR_SHAPE = 3,         /* tensor shapes do not fit together */
    TSQ_ERR_DTYPE = 4,         /* a tensor has the wrong element type */
    TSQ_ERR_OVERFLOW = 5,      /* a size computation would overflow */
    TSQ_ERR_NO_MEMORY = 6,     /* the allocator returned NULL */
    TSQ_ERR_NOT_FINITE = 7,    /* NaN or Inf found where numbers are needed */
    TSQ_ERR_STATE = 8,         /* the call is not valid in the object's state */
    TSQ_ERR_UNSUPPORTED = 9,   /* not available in this build or on this CPU */
    TSQ_ERR_IO = 10,           /* reading or writing a file failed */
    TSQ_ERR_FORMAT = 11,       /* malformed or corrupt serialized data */
    TSQ_ERR_VERSION = 12,      /* serialized data of an unsupported version */
    TSQ_ERR_NO_DATA = 13,      /* nothing was observed or given to work on */
    TSQ_ERR_TOO_SMALL = 14,    /* a caller-supplied buffer is too small */
    TSQ_ERR_INTERNAL = 15,     /* a bug in libtsq: please report it */
    TSQ_ERR_CANCELLED = 16     /* the progress callback asked the call to stop */
};

/*! tsq_status_string() :
 *  @return a static, human-readable name for a status ("TSQ_ERR_SHAPE: tensor
 *  shapes do not fit together"). Unknown values give "unknown status".
 *  Cannot fail. Thread-safe. */
TSQ_API const char *tsq_status_string(tsq_status status);

/* ------------------------------------------------------------------ */
/* Context                                                             */
/* ------------------------------------------------------------------ */

/* The context holds the allocator, the thread count, the random seed and the
 * log callback. Every other object is created from a context and keeps a
 * pointer to it: destroy the context last. */
typedef struct tsq_context tsq_context;

/*! Allocator callbacks.
 *  alloc(user, size, alignment) returns a block of at least `size` bytes
 *  aligned to `alignment` (a power of two, at most 64), or NULL on failure.
 *  free(user, ptr) releases such a block; ptr is never NULL.
 *  If objects made from one context are used from several threads at once,
 *  both callbacks must be thread-safe. */
typedef void *(*tsq_alloc_fn)(void *user, uint64_t size, uint64_t alignment);
typedef void (*tsq_free_fn)(void *user, void *ptr);

/*! tsq_context_create() :
 *  Creates a context with the default allocator (posix_memalign/free), one
 *  thread, seed 0 and no log callback. *out receives the new context, or NULL
 *  on failure.
 *  @return TSQ_OK, TSQ_ERR_NULL (out is NULL), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_context_create(tsq_context **out);

/*! tsq_context_create_with_allocator() :
 *  As tsq_context_create(), but every allocation made by the context and the
 *  objects created from it goes through alloc_fn/free_fn, including the
 *  context itself. `user` is passed back unchanged.
 *  @return TSQ_OK, TSQ_ERR_NULL (out, alloc_fn or free_fn is NULL),
 *  TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_context_create_with_allocator(tsq_context **out,
                                                     tsq_alloc_fn alloc_fn,
                                                     tsq_free_fn free_fn,
                                                     void *user);

/*! tsq_context_destroy() :
 *  Frees the context. Accepts NULL. Objects created from it must have been
 *  destroyed first. */
TSQ_API void tsq_context_destroy(tsq_context *ctx);

/*! tsq_context_errmsg() :
 *  @return the message of the last failed call made on this context (a
 *  context call or a constructor that was given this context), "" if none.
 *  The string is owned by the context and valid until its next call.
 *  A NULL ctx gives a static "no context". */
TSQ_API const char *tsq_context_errmsg(const tsq_context *ctx);

/* Option calls. Every handle with options has the same three calls,
 * tsq_<handle>_set_option(h, key, value), tsq_<handle>_get_option(h, key,
 * &value) and tsq_<handle>_option_bounds(key, &lo, &hi), with values as
 * doubles: a double holds every integer option exactly (their bounds are
 * far below 2^53), so one type serves every option and every binding. An
 * integer option refuses a non-integral value; NaN is refused everywhere.
 * Option-key families have disjoint ranges (context 0x0100, quantizer
 * 0x0200, regressor 0x0300, layer 0x0400, net conversion 0x0600), so a key
 * of another family is refused with TSQ_ERR_INVALID and a message naming
 * that family, instead of being taken for one of this handle's options. */

/* Context options: the 0x0100 family. */
enum {
    TSQ_CONTEXT_THREADS = 0x0101,  /* worker threads for libtsq's own loops; 1..256, default 1 */
    TSQ_CONTEXT_LOG_LEVEL = 0x0102, /* 0 none, 1 errors, 2 warnings, 3 info, 4 debug; default 1 */
    /* The TSQ_CPU_* bits the context's kernels may use: they use the
     * detected features this mask keeps (tsq_context_cpu_features() reports
     * the result). 0..2^32-1, default 2^32-1 (all). For hosts that must
     * keep a feature off, e.g. TSQ_CPU_AMXINT8, whose first use in a plan
     * asks Linux for the tile state for the whole process (docs/kernels.md),
     * and for comparing kernel paths. A plan keeps the kernels chosen at its
     * creation; layers, nets and the other calls read it when called. Inference
     * kernels give the same bits on every path; the float training layers
     * too wherever their direct kernels run, while a CPU without AVX2 + FMA
     * takes the BLAS for larger convolutions (docs/nn.md). */
    TSQ_CONTEXT_CPU_MASK = 0x0103
};

/*! tsq_context_set_option() :
 *  Sets option `key` (TSQ_CONTEXT_*) of the context to `value` (every
 *  context option is an integer).
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx), TSQ_ERR_INVALID (unknown key, a key of
 *  another family, NaN, a value not integral or out of the bounds that
 *  tsq_context_option_bounds() reports). */
TSQ_API tsq_status tsq_context_set_option(tsq_context *ctx, int32_t key, double value);

/*! tsq_context_get_option() : reads an option into *value.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, or value: with a message on ctx),
 *  TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_context_get_option(const tsq_context *ctx, int32_t key, double *value);

/*! tsq_context_option_bounds() : the inclusive range of an option's values.
 *  Needs no context. Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_context_option_bounds(int32_t key, double *lo, double *hi);

/*! tsq_context_set_seed() :
 *  Sets the 64-bit seed from which every random stream of objects created
 *  afterwards is derived. The same seed and thread count give the same
 *  results. @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_context_set_seed(tsq_context *ctx, uint64_t seed);

/*! tsq_context_get_seed() : @return TSQ_OK, TSQ_ERR_NULL (ctx, or seed: with
 *  a message on ctx). */
TSQ_API tsq_status tsq_context_get_seed(const tsq_context *ctx, uint64_t *seed);

/*! Log callback: level as TSQ_CONTEXT_LOG_LEVEL, message without newline.
 *  libtsq never prints by itself; messages go only here. */
typedef void (*tsq_log_fn)(void *user, int32_t level, const char *message);

/*! tsq_context_set_log() :
 *  Installs (or, with fn NULL, removes) the log callback. Messages at or
 *  below the TSQ_CONTEXT_LOG_LEVEL option are passed to it, from the thread
 *  that made the call. Level 1 carries every failure's message; level 3
 *  (info) what the long calls did and chose: each quantizer fit (eps,
 *  delta), each quantizer of tsq_net_learn_codes, each regressor pass and
 *  each layer tsq_net_fit_transform converted (objective), and a line per
 *  stage of tsq_plan_create (the kernel and operand format of each low-bit
 *  stage, what was fused); level 4 (debug) the regressor's rounds.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx). */
TSQ_API tsq_status tsq_context_set_log(tsq_context *ctx, tsq_log_fn fn, void *user);

/* ------------------------------------------------------------------ */
/* Progress and cancellation                                           */
/* ------------------------------------------------------------------ */

/* Stages of the long calls, as passed to the progress callback. Within one
 * run of a stage, done never decreases and total stays the same; a run
 * that completes ends with done = total. Values may be skipped (a fit that
 * stops early jumps to total). A new run of the stage starts again from a
 * lower done. Stages nest:
 * a TSQ_PROGRESS_NET_FIT_TRANSFORM run contains a TSQ_PROGRESS_REGRESSOR_PASS
 * run per layer, a TSQ_PROGRESS_NET_LEARN_CODES run a
 * TSQ_PROGRESS_QUANTIZER_FIT run per quantizer. */
enum {
    /* tsq_quantizer_fit, tsq_learn_codes (and the quantizers that
     * tsq_net_learn_codes fits): channels fitted of the quantizer's
     * channels (1 for a per-tensor quantizer). */
    TSQ_PROGRESS_QUANTIZER_FIT = 1,
    /* tsq_net_learn_codes, in the call with last = 1: quantizers fitted of
     * the net's quantizer positions (with TSQ_NET_TSQ_SEQUENTIAL one more
     * per pass). */
    TSQ_PROGRESS_NET_LEARN_CODES = 2,
    /* tsq_fit_transform, tsq_regressor_end_pass (and the layers of
     * tsq_net_fit_transform): passes over the data ended, of at most
     * 1 + (rounds + 1) + polish passes (1 with the linear loss). */
    TSQ_PROGRESS_REGRESSOR_PASS = 3,
    /* tsq_net_fit_transform: layers fitted of the layers selected for
     * conversion, reported when a layer's fit is done and before it is
     * replaced by its low-bit layer. */
    TSQ_PROGRESS_NET_FIT_TRANSFORM = 4,
    /* tsq_plan_create, tsq_plan_load: network stages planned (kernel chosen,
     * weights packed) of the network's stages. */
    TSQ_PROGRESS_PLAN_CREATE = 5
};

/*! Progress callback: stage is a TSQ_PROGRESS_* value, done and total as
 *  that stage says (0 <= done <= total, total >= 1). Return 0 to go on;
 *  any other value cancels the call in progress, which then returns
 *  TSQ_ERR_CANCELLED with a message on its handle, and, like any failed
 *  call, leaves the caller's outputs as they were (a call documented to
 *  end a session or abandon a fit on failure does so). The callback is
 *  called from the thread that made the call, never from libtsq's own
 *  worker threads, and not while a worker runs; it must not call libtsq
 *  on the handles the call in progress uses. */
typedef int32_t (*tsq_progress_fn)(void *user, int32_t stage, int64_t done, int64_t total);

/*! tsq_context_set_progress() :
 *  Installs (or, with fn NULL, removes) the progress callback of the calls
 *  made on this context and the objects created from it. `user` is passed
 *  back unchanged. Without a callback nothing is reported and nothing can
 *  be cancelled. Like tsq_context_set_log, this is a use of the context.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx). */
TSQ_API tsq_status tsq_context_set_progress(tsq_context *ctx, tsq_progress_fn fn, void *user);

/*! tsq_progress_stage_name() :
 *  @return a static short name of a TSQ_PROGRESS_* stage ("quantizer fit",
 *  "regressor pass", ...), "unknown stage" for other values. For displays.
 *  Cannot fail. Thread-safe. */
TSQ_API const char *tsq_progress_stage_name(int32_t stage);

/* ------------------------------------------------------------------ */
/* Build, BLAS and CPU information                                     */
/* ------------------------------------------------------------------ */

/* CPU feature bits, as reported by tsq_context_cpu_features(). */
enum {
    TSQ_CPU_AVX2 = 1 << 0,
    TSQ_CPU_FMA = 1 << 1,
    TSQ_CPU_AVX512F = 1 << 2,
    TSQ_CPU_AVX512BW = 1 << 3,
    TSQ_CPU_AVX512VL = 1 << 4,
    TSQ_CPU_AVX512VNNI = 1 << 5,
    TSQ_CPU_AVX512VPOPCNTDQ = 1 << 6,
    TSQ_CPU_AVXVNNI = 1 << 7,
    /* AMX-TILE and AMX-INT8, with the operating system saving the tile
     * state; reported only together with AVX512F, BW, VL and VNNI. The
     * inference plan then runs its byte-layout stages on tiles, after
     * asking Linux for the process's permission to use them (when refused,
     * it uses AVX-512 VNNI, with the same results). */
    TSQ_CPU_AMXINT8 = 1 << 8
};

/*! tsq_context_cpu_features() :
 *  Writes the TSQ_CPU_* bits of the CPU features the context's kernels use
 *  to *features: those detected once, when the context was created (CPUID
 *  for what the processor has, XGETBV for what the operating system saves),
 *  that TSQ_CONTEXT_CPU_MASK keeps.
 *  Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, or features: with a message on ctx). */
TSQ_API tsq_status tsq_context_cpu_features(const tsq_context *ctx, uint32_t *features);

/* Keys of tsq_context_info(): the context-info family, 0x0A00. */
enum {
    TSQ_INFO_VERSION = 0x0A01,   /* "0.1.0" */
    TSQ_INFO_BLAS = 0x0A02,      /* the BLAS running: "OpenBLAS 0.3.21 ...", "reference CBLAS" */
    TSQ_INFO_BLAS_CORE = 0x0A03, /* the BLAS kernel: e.g. "SkylakeX", "Prescott", "n/a" */
    TSQ_INFO_CPU = 0x0A04,       /* detected features: "avx2 fma avx512f ..." */
    TSQ_INFO_BUILD = 0x0A05,     /* compiler and build BLAS choice */
    TSQ_INFO_SUMMARY = 0x0A06    /* all of the above on one line */
};

/*! tsq_context_info() :
 *  Writes a pointer to a NUL-terminated description to *out. The string is
 *  owned by the context and stays valid until the next tsq_context_info() on
 *  it or its destruction.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, or out: with a message on ctx),
 *  TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_context_info(tsq_context *ctx, int32_t key, const char **out);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_CORE_H */
