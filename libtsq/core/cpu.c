/* CPU feature detection: CPUID for what the processor has, XGETBV for what
 * the operating system saves on a context switch. A feature is reported
 * only when both agree, since AVX-512 code on an OS that does not save the
 * ZMM registers corrupts state silently. */
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

uint32_t tsq__cpu_detect(void)
{
    unsigned a, b, c, d;
    uint32_t f = 0;
    uint64_t xcr0;
    int os_avx, os_avx512;

    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    /* OSXSAVE (ECX bit 27) must be set before XGETBV may run. */
    if (!(c & (1u << 27)))
        return 0;
    xcr0 = read_xcr0();
    os_avx = (xcr0 & 0x6) == 0x6;             /* XMM and YMM state */
    os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM hi256, hi16 ZMM */
    if (os_avx && (c & (1u << 12)))
        f |= TSQ_CPU_FMA;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    if (os_avx && (b & (1u << 5)))
        f |= TSQ_CPU_AVX2;
    if (os_avx512) {
        if (b & (1u << 16)) f |= TSQ_CPU_AVX512F;
        if (b & (1u << 30)) f |= TSQ_CPU_AVX512BW;
        if (b & (1u << 31)) f |= TSQ_CPU_AVX512VL;
        if (c & (1u << 11)) f |= TSQ_CPU_AVX512VNNI;
        if (c & (1u << 14)) f |= TSQ_CPU_AVX512VPOPCNTDQ;
    }
    if (os_avx && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4)))
        f |= TSQ_CPU_AVXVNNI;
    return f;
}
#else
uint32_t tsq__cpu_detect(void) { return 0; }
#endif
