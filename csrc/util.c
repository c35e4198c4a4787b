/* util.c -- error messages and the thread-count setting shared by all kernels (isp.h); the
   bottom unit: it depends on no other. */
#include <stdarg.h>
#include <stdio.h>

#include "isp.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char isp_errbuf[512];
static int isp_num_threads = 1;

isp_status isp_fail(isp_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(isp_errbuf, sizeof isp_errbuf, fmt, ap);
    va_end(ap);
    return status;
}

const char *isp_last_error(void)
{
    return isp_errbuf;
}

void isp_clear_error(void)
{
    isp_errbuf[0] = '\0';
}

void isp_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    isp_num_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int isp_get_num_threads(void)
{
    return isp_num_threads;
}
