/*
 * ab.c — interleaved A/B of the CLI's start with several shim binaries
 * (scripts/ab builds and runs it; docs/performance.md, "Second pass").
 *
 *   ab N plain|isolated SHIM...
 *
 * Each round runs `SHIM --root R run --rm --id t1 --cgroup-parent
 * nomad-shim-ab [ISOLATION] -- /bin/true`
 * once with every SHIM in the order given, as a subreaper that reaps every
 * process the run leaves (stdio on /dev/null). `isolated` adds the issue's
 * options (`--task-dir D --chroot --ns pid,ipc,uts --user nobody --memory
 * 256M --pids-limit 128`), with a fresh task dir made, untimed, before each
 * run. Five untimed rounds first. Prints per SHIM the median wall time and
 * the median over rounds of (its time ÷ the first SHIM's time that round).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double run(char *shim, int j, int isolated, const char *tmp)
{
    char root[256], td[256], cmd[600];
    snprintf(root, sizeof root, "%s/root%d", tmp, j);
    snprintf(td, sizeof td, "%s/td%d", tmp, j);
    if (isolated) {
        snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", td, td);
        if (system(cmd) != 0) {
            fprintf(stderr, "ab: %s failed\n", cmd);
            exit(1);
        }
    }
    char *plain[] = {shim, "--root", root, "run", "--rm", "--id", "t1", "--cgroup-parent",
                     "nomad-shim-ab", "--", "/bin/true", NULL};
    char *iso[] = {shim, "--root", root, "run", "--rm", "--id", "t1", "--cgroup-parent",
                   "nomad-shim-ab", "--task-dir", td,
                   "--chroot", "--ns", "pid,ipc,uts", "--user", "nobody", "--memory", "256M",
                   "--pids-limit", "128", "--", "/bin/true", NULL};
    long long t0 = now();
    pid_t p = fork();
    if (p == 0) {
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(shim, isolated ? iso : plain);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    double t = (now() - t0) / 1e6;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    if (st != 0) {
        fprintf(stderr, "ab: %s ended with wait status %d\n", shim, st);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[2], "plain") && strcmp(argv[2], "isolated"))) {
        fprintf(stderr, "usage: ab N plain|isolated SHIM...\n");
        return 2;
    }
    int n = atoi(argv[1]), k = argc - 3, isolated = !strcmp(argv[2], "isolated");
    if (n < 1 || k > 16) {
        fprintf(stderr, "ab: 1 or more rounds, 16 shims at most\n");
        return 2;
    }
    char tmp[] = "/dev/shm/nomad-shim-ab.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("ab: mkdtemp");
        return 1;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    double *v = malloc(sizeof(double) * n * k), *r = malloc(sizeof(double) * n * k);
    for (int i = -5; i < n; i++) {
        double t[16];
        for (int j = 0; j < k; j++)
            t[j] = run(argv[3 + j], j, isolated, tmp);
        if (i >= 0)
            for (int j = 0; j < k; j++) {
                v[j * n + i] = t[j];
                r[j * n + i] = t[j] / t[0];
            }
    }
    for (int j = 0; j < k; j++) {
        qsort(v + j * n, n, sizeof(double), cmp);
        qsort(r + j * n, n, sizeof(double), cmp);
        printf("%-8s %-50s median %.3f ms  ÷ first, per round: %.3f\n", argv[2], argv[3 + j],
               v[j * n + n / 2], r[j * n + n / 2]);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    return system(cmd) != 0;
}
