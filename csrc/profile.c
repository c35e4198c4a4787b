/* profile.c -- the opt-in per-site wall-clock table of profile.h. */
#include <string.h>
#include <time.h>

#include "profile.h"

int isp_prof_on = 0;
static double prof_seconds[ISP_PROF_NUM];
static int64_t prof_calls[ISP_PROF_NUM];

#define ISP_PROF_NAME(id, name) name,
static const char *const prof_names[ISP_PROF_NUM] = {ISP_PROF_SITES(ISP_PROF_NAME)};
#undef ISP_PROF_NAME

double isp_prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void isp_prof_add(isp_prof_site site, double t0)
{
    prof_seconds[site] += isp_prof_now() - t0;
    prof_calls[site] += 1;
}

void isp_prof_reset(int on)
{
    memset(prof_seconds, 0, sizeof prof_seconds);
    memset(prof_calls, 0, sizeof prof_calls);
    isp_prof_on = on != 0;
}

const char *isp_prof_read(int i, double *seconds, int64_t *calls)
{
    if (i < 0 || i >= ISP_PROF_NUM)
        return NULL;
    *seconds = prof_seconds[i];
    *calls = prof_calls[i];
    return prof_names[i];
}
