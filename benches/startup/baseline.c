/*
 * baseline.c — the honest baselines of the startup bench (issue 11, point 2).
 *
 * The bench compiles this with the system compiler (`cc -O2 -static`) and
 * runs it as a small, separate, quiet process, one block of runs at a time:
 *
 *   baseline bare  WARMUP N PAUSE_US PROGRAM
 *       N times fork + execve(PROGRAM) + waitpid; stdio on /dev/null.
 *   baseline floor WARMUP N PAUSE_US PROGRAM ID_PREFIX CGROUP_DIR...
 *       N times the kernel work a task needs, and nothing else: fork +
 *       execve of this (static) binary as the "supervisor", which makes the
 *       task's cgroup under each CGROUP_DIR (every v1 hierarchy the shim
 *       uses, or the one v2 directory), forks the task child, which joins
 *       them (one `cgroup.procs` write each) and execs PROGRAM; the
 *       supervisor waits for it and removes the cgroups.
 *
 * Before each run, PAUSE_US microseconds of untimed sleep. The first WARMUP
 * runs are untimed, so a block never starts right after another variant's
 * clean-up. Prints one line per timed run: its wall time in nanoseconds.
 * Any failure: a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "baseline: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    _exit(1);
}

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void null_stdio(void)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("open", "/dev/null");
    for (int i = 0; i < 3; i++)
        if (dup2(fd, i) < 0)
            die("dup2", "/dev/null");
}

/* fork + execve(argv[0]) + waitpid; the child's status must be 0. */
static void run(char *const argv[], const char *const *join, int njoin)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    if (pid == 0) {
        for (int i = 0; i < njoin; i++) {
            int fd = open(join[i], O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, "0", 1) != 1)
                die("join", join[i]);
            close(fd);
        }
        null_stdio();
        execve(argv[0], argv, environ);
        die("execve", argv[0]);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid", NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "baseline: %s ended with status %#x\n", argv[0], st);
        _exit(1);
    }
}

/* The supervisor's part of a floor run: argv = PROGRAM ID CGROUP_DIR... */
static int supervisor(int argc, char **argv)
{
    char *program = argv[0], *id = argv[1];
    int n = argc - 2;
    char dirs[16][512], procs[16][560];
    const char *join[16];
    if (n > 16)
        n = 16;
    for (int i = 0; i < n; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/%s", argv[2 + i], id);
        snprintf(procs[i], sizeof procs[i], "%s/cgroup.procs", dirs[i]);
        join[i] = procs[i];
        if (mkdir(dirs[i], 0755) < 0)
            die("mkdir", dirs[i]);
    }
    char *task[] = {program, NULL};
    run(task, join, n);
    for (int i = n - 1; i >= 0; i--)
        if (rmdir(dirs[i]) < 0)
            die("rmdir", dirs[i]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "supervisor") == 0)
        return supervisor(argc - 2, argv + 2);
    if (argc < 6 || (strcmp(argv[1], "bare") != 0 && strcmp(argv[1], "floor") != 0)) {
        fprintf(stderr, "usage: baseline bare|floor WARMUP N PAUSE_US PROGRAM [ID_PREFIX CGROUP_DIR...]\n");
        return 2;
    }
    int floor = strcmp(argv[1], "floor") == 0;
    int warmup = atoi(argv[2]), n = atoi(argv[3]);
    long pause_us = atol(argv[4]);
    char *program = argv[5];
    if (floor && argc < 8) {
        fprintf(stderr, "baseline floor: needs ID_PREFIX and at least one CGROUP_DIR\n");
        return 2;
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len < 0)
        die("readlink", "/proc/self/exe");
    self[len] = 0;
    long long *t = calloc(n > 0 ? n : 1, sizeof *t);
    if (!t)
        die("calloc", NULL);
    /* The supervisor's argv: self supervisor PROGRAM ID CGROUP_DIR... */
    char **sup = calloc(argc + 2, sizeof *sup);
    char id[128];
    if (!sup)
        die("calloc", NULL);
    sup[0] = self;
    sup[1] = "supervisor";
    sup[2] = program;
    sup[3] = id;
    for (int i = 7; i < argc; i++)
        sup[i - 3] = argv[i];
    char *bare[] = {program, NULL};
    for (int i = 0; i < warmup + n; i++) {
        if (pause_us > 0) {
            struct timespec p = {pause_us / 1000000, (pause_us % 1000000) * 1000};
            nanosleep(&p, NULL);
        }
        if (floor)
            snprintf(id, sizeof id, "%s-%d-%d", argv[6], (int)getpid(), i);
        long long t0 = now_ns();
        run(floor ? sup : bare, NULL, 0);
        long long dt = now_ns() - t0;
        if (i >= warmup)
            t[i - warmup] = dt;
    }
    for (int i = 0; i < n; i++)
        printf("%lld\n", t[i]);
    return fflush(stdout) == 0 ? 0 : 1;
}
