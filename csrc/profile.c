/* profile.c -- the opt-in per-site wall-clock table of profile.h. */
#include <string.h>
#include <time.h>

#include "profile.h"

int isp_prof_on = 0;
static double prof_wall[ISP_PROF_NUM], prof_cpu[ISP_PROF_NUM];
static int64_t prof_calls[ISP_PROF_NUM];

#define ISP_PROF_NAME(id, name) name,
static const char *const prof_names[ISP_PROF_NUM] = {ISP_PROF_SITES(ISP_PROF_NAME)};
#undef ISP_PROF_NAME

isp_prof_mark isp_prof_now(void)
{
    struct timespec w, c;
    clock_gettime(CLOCK_MONOTONIC, &w);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
    isp_prof_mark m = {(double)w.tv_sec + 1e-9 * (double)w.tv_nsec,
                       (double)c.tv_sec + 1e-9 * (double)c.tv_nsec};
    return m;
}

void isp_prof_add(isp_prof_site site, isp_prof_mark t0)
{
    isp_prof_mark t1 = isp_prof_now();
    prof_wall[site] += t1.wall - t0.wall;
    prof_cpu[site] += t1.cpu - t0.cpu;
    prof_calls[site] += 1;
}

void isp_prof_set(int on)
{
    if (on) {
        memset(prof_wall, 0, sizeof prof_wall);
        memset(prof_cpu, 0, sizeof prof_cpu);
        memset(prof_calls, 0, sizeof prof_calls);
    }
    isp_prof_on = on != 0;
}

const char *isp_prof_read(int i, double *wall, double *cpu, int64_t *calls)
{
    if (i < 0 || i >= ISP_PROF_NUM)
        return NULL;
    *wall = prof_wall[i];
    *cpu = prof_cpu[i];
    *calls = prof_calls[i];
    return prof_names[i];
}
