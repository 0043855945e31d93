/* The info call: which library, which BLAS and which BLAS kernel run here.
 * The BLAS is identified at run time, not from the build flags, because on
 * Debian the reference libblas.so.3 may be an alternative that resolves to
 * OpenBLAS (and vice versa); what matters for speed is what actually runs. */
#define _GNU_SOURCE 1
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#ifdef TSQ_BLAS_OPENBLAS
#include <cblas.h> /* declares openblas_get_config and openblas_get_corename */
#endif

typedef char *(*string_fn)(void);

static const char *openblas_string(const char *symbol)
{
    string_fn fn;
    void *sym;
#ifdef TSQ_BLAS_OPENBLAS
    /* Linked against OpenBLAS: call it directly (this also keeps the
     * dependency even when --as-needed would drop an unused library). */
    if (strcmp(symbol, "openblas_get_config") == 0)
        return openblas_get_config();
    if (strcmp(symbol, "openblas_get_corename") == 0)
        return openblas_get_corename();
#endif
    /* Built for the reference CBLAS: the libblas.so.3 that the loader chose
     * may still be OpenBLAS, so ask the process. */
    sym = dlsym(RTLD_DEFAULT, symbol);
    if (!sym)
        return NULL;
    /* POSIX guarantees object-to-function pointer conversion via memcpy. */
    memcpy(&fn, &sym, sizeof fn);
    return fn();
}

static void trim_copy(char *dst, size_t cap, const char *src)
{
    size_t n;
    snprintf(dst, cap, "%s", src);
    n = strlen(dst);
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\n'))
        dst[--n] = '\0';
}

static void blas_name(char *dst, size_t cap)
{
    const char *config = openblas_string("openblas_get_config");
    if (config)
        trim_copy(dst, cap, config);
    else
        snprintf(dst, cap, "reference CBLAS (netlib)");
    if (strncmp(dst, "OpenBLAS", 8) != 0 && config) {
        char tmp[TSQ_INFO_CAP];
        snprintf(tmp, sizeof tmp, "OpenBLAS %s", dst);
        trim_copy(dst, cap, tmp);
    }
}

static void blas_core(char *dst, size_t cap)
{
    const char *core = openblas_string("openblas_get_corename");
    trim_copy(dst, cap, core ? core : "n/a");
}

static void cpu_string(char *dst, size_t cap)
{
    static const struct { uint32_t bit; const char *name; } names[] = {
        {TSQ_CPU_AVX2, "avx2"}, {TSQ_CPU_FMA, "fma"},
        {TSQ_CPU_AVX512F, "avx512f"}, {TSQ_CPU_AVX512BW, "avx512bw"},
        {TSQ_CPU_AVX512VL, "avx512vl"}, {TSQ_CPU_AVX512VNNI, "avx512vnni"},
        {TSQ_CPU_AVX512VPOPCNTDQ, "avx512vpopcntdq"}, {TSQ_CPU_AVXVNNI, "avxvnni"},
        {TSQ_CPU_AMXINT8, "amx-int8"},
    };
    uint32_t f = tsq__cpu_detect();
    size_t i, used = 0;
    dst[0] = '\0';
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (f & names[i].bit) {
            int n = snprintf(dst + used, cap - used, "%s%s", used ? " " : "", names[i].name);
            if (n < 0 || (size_t)n >= cap - used)
                break;
            used += (size_t)n;
        }
    }
    if (!used)
        snprintf(dst, cap, "baseline (no AVX2)");
}

static void build_string(char *dst, size_t cap)
{
#if defined(__clang__)
    const char *cc = "clang " __clang_version__;
#elif defined(__GNUC__)
    const char *cc = "gcc " __VERSION__;
#else
    const char *cc = "unknown compiler";
#endif
#ifdef TSQ_BLAS_OPENBLAS
    const char *blas = "openblas";
#else
    const char *blas = "cblas";
#endif
    snprintf(dst, cap, "libtsq %s, %s, BLAS=%s", TSQ_VERSION_STRING, cc, blas);
}

tsq_status tsq_context_info(tsq_context *ctx, int32_t key, const char **out)
{
    char a[128], b[128], c[64], d[128];
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!out, &ctx->obj, TSQ_ERR_NULL, "context_info: out is NULL");
    switch (key) {
    case TSQ_INFO_VERSION: snprintf(ctx->info, sizeof ctx->info, "%s", TSQ_VERSION_STRING); break;
    case TSQ_INFO_BLAS: blas_name(ctx->info, sizeof ctx->info); break;
    case TSQ_INFO_BLAS_CORE: blas_core(ctx->info, sizeof ctx->info); break;
    case TSQ_INFO_CPU: cpu_string(ctx->info, sizeof ctx->info); break;
    case TSQ_INFO_BUILD: build_string(ctx->info, sizeof ctx->info); break;
    case TSQ_INFO_SUMMARY:
        build_string(a, sizeof a);
        blas_name(b, sizeof b);
        blas_core(c, sizeof c);
        cpu_string(d, sizeof d);
        snprintf(ctx->info, sizeof ctx->info, "%s | blas: %s | blas kernel: %s | cpu: %s",
                 a, b, c, d);
        break;
    default:
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "context_info: unknown key 0x%04x; info keys are 0x%04x..0x%04x",
                         (unsigned)key, (unsigned)TSQ_INFO_VERSION, (unsigned)TSQ_INFO_SUMMARY);
    }
    *out = ctx->info;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
