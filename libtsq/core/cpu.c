/* CPU feature detection: CPUID for what the processor has, XGETBV for what
 * the operating system saves on a context switch. A feature is reported
 * only when both agree, since AVX-512 code on an OS that does not save the
 * ZMM registers corrupts state silently. */
#if defined(__linux__) && defined(__x86_64__)
#define _GNU_SOURCE 1 /* syscall() */
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

#define TSQ__CPU_VNNI_SET \
    (TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW | TSQ_CPU_AVX512VL | TSQ_CPU_AVX512VNNI)

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
    int os_avx, os_avx512, os_amx;

    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    /* OSXSAVE (ECX bit 27) must be set before XGETBV may run. */
    if (!(c & (1u << 27)))
        return 0;
    xcr0 = read_xcr0();
    os_avx = (xcr0 & 0x6) == 0x6;             /* XMM and YMM state */
    os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM hi256, hi16 ZMM */
    os_amx = (xcr0 & 0x60000) == 0x60000;        /* XTILECFG, XTILEDATA */
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
    /* AMX-TILE (EDX bit 24) and AMX-INT8 (bit 25), reported only beside
     * the AVX-512 set of the VNNI kernel: the plan's AMX stages share its
     * byte layout and AVX-512 epilogues. Valgrind hides AVX-512, so it
     * never sees this bit either. */
    if (os_amx && (d & (1u << 24)) && (d & (1u << 25)) &&
        (f & TSQ__CPU_VNNI_SET) == TSQ__CPU_VNNI_SET)
        f |= TSQ_CPU_AMXINT8;
    if (os_avx && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4)))
        f |= TSQ_CPU_AVXVNNI;
    return f;
}
#else
uint32_t tsq__cpu_detect(void) { return 0; }
#endif

#if defined(__linux__) && defined(__x86_64__)
int tsq__amx_permit(void)
{
    /* arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): the kernel
     * enlarges the process's signal frames and lets every thread use the
     * tile data from then on. */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#else
int tsq__amx_permit(void) { return 0; }
#endif
