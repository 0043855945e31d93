/* The one place that includes the CBLAS header. BLAS=openblas compiles with
 * OpenBLAS's include directory first on the path; BLAS=cblas uses Debian's
 * reference header (cblas-netlib.h), since cblas.h itself is an alternative
 * that may point to OpenBLAS's copy. Only standard cblas_* calls may be used
 * outside info.c, so that both BLAS builds behave the same. */
#ifndef TSQ_BLAS_H
#define TSQ_BLAS_H
#if !defined(TSQ_BLAS_OPENBLAS) && !defined(TSQ_BLAS_NETLIB)
#  error "blas.h without a BLAS define: add the source to the Makefile's BLAS_SRCS"
#endif
#if defined(TSQ_BLAS_NETLIB) && defined(__has_include)
#  if __has_include(<cblas-netlib.h>)
#    include <cblas-netlib.h>
#  else
#    include <cblas.h>
#  endif
#else
#  include <cblas.h>
#endif
#endif
