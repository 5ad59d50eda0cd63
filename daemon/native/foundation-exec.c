/*
 * foundation-exec DAEMON_PID PROGRAM [ARG...]
 *
 * The one exec between foundationd's fork and a child's program, doing what no Python may do there (the daemon
 * is multi-threaded once ZeroMQ runs): arm the parent-death signal, make sure the parent is still the daemon
 * that forked us (it may have died before the signal was armed), close every descriptor but 0, 1 and 2 (what
 * lets the daemon start it with posix_spawn rather than Popen: see close_from_3), give every signal its default
 * disposition and unblock them all (see default_signals), then exec the program, which keeps this pid.
 * It replaces `setpriv --pdeathsig KILL -- sh -c GUARD ...` (three execs) when a C compiler was there at
 * install time; foundationd falls back to that chain otherwise. PROGRAM must be a path (the daemon resolves it).
 *
 * Built freestanding where it can be (x86-64: -DFOUNDATION_EXEC_FREESTANDING -nostdlib -static, its own _start
 * and raw system calls), because it runs once per child start and is otherwise all libc start-up: a static
 * glibc binary probes the CPU (cpuid, trapped by a hypervisor), applies its relocations and sets up TLS before
 * main, ~0.3 ms per exec on a VM, against ~0.03 ms for these few system calls. Elsewhere the same code runs
 * on libc (the Makefile tries both).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#ifndef SYS_close_range
#define SYS_close_range 436 /* the same number on every architecture; older headers lack the name */
#endif
#define EXIT_CANNOT 127

#ifdef FOUNDATION_EXEC_FREESTANDING
#if !defined(__x86_64__)
#error "no freestanding system-call layer for this architecture: build without FOUNDATION_EXEC_FREESTANDING"
#endif

static long sys(long n, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret; /* -errno on failure */
}

static int run(int argc, char **argv, char **envp);

/* The kernel's initial stack: argc, argv[0..argc-1], NULL, envp..., NULL. */
__attribute__((used)) static void start_c(long *sp) {
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    sys(SYS_exit_group, run(argc, argv, argv + argc + 1), 0, 0, 0);
    for (;;) {
    }
}

__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start_c\n"
        "  hlt\n");

#else /* libc */
#include <unistd.h>

extern char **environ;

static long sys(long n, long a, long b, long c, long d) {
    long ret = syscall(n, a, b, c, d);
    return ret == -1 ? -errno : ret;
}

static int run(int argc, char **argv, char **envp);

int main(int argc, char **argv) { return run(argc, argv, environ); }
#endif

static long length(const char *s) {
    long n = 0;
    while (s[n]) n++;
    return n;
}

static void say(const char *s) { sys(SYS_write, 2, (long)s, length(s), 0); }

/* strerror without libc, for the failures a spawn can meet; the daemon checks most of them before it forks. */
static const char *describe(long err) {
    switch (err) {
        case ENOENT: return "No such file or directory";
        case EACCES: return "Permission denied";
        case ENOEXEC: return "Exec format error";
        case ENOTDIR: return "Not a directory";
        case ELOOP: return "Too many levels of symbolic links";
        case ENAMETOOLONG: return "File name too long";
        case E2BIG: return "Argument list too long";
        case ENOMEM: return "Cannot allocate memory";
        case ETXTBSY: return "Text file busy";
        case EPERM: return "Operation not permitted";
        case EINVAL: return "Invalid argument";
        default: return "system error";
    }
}

static int fail(const char *what, const char *subject, long err) {
    say("foundation-exec: ");
    say(what);
    say(subject);
    say(": ");
    say(describe(err));
    say("\n");
    return EXIT_CANNOT;
}

static long parse_pid(const char *s) {
    long pid = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || pid > 1L << 40) return -1;
        pid = pid * 10 + (*s - '0');
    }
    return pid;
}

struct kernel_dirent64 { /* what getdents64 fills in (no userspace header declares it everywhere) */
    unsigned long long ino;
    long long off;
    unsigned short reclen;
    unsigned char type;
    char name[];
};

/* Linux 5.9 and later close them in one call. Before that, the open ones as /proc/self/fd lists them (what
 * CPython's own fallback does): one close per possible descriptor would be 65,536 system calls under
 * foundationd's raised limit. Without /proc, that loop after all. */
static void close_from_3(void) {
    if (sys(SYS_close_range, 3, ~0U, 0, 0) == 0) return;
    long dir = sys(SYS_openat, AT_FDCWD, (long)"/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dir < 0) {
        struct rlimit limit = {1024, 1024};
        sys(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&limit);
        for (unsigned long fd = 3; fd < limit.rlim_cur && fd < 1UL << 20; fd++) sys(SYS_close, (long)fd, 0, 0, 0);
        return;
    }
    long buf[512]; /* aligned for the records */
    long got;
    while ((got = sys(SYS_getdents64, dir, (long)buf, sizeof buf, 0)) > 0) {
        for (long at = 0; at < got;) {
            struct kernel_dirent64 *entry = (struct kernel_dirent64 *)((char *)buf + at);
            long fd = parse_pid(entry->name); /* -1 for "." and ".." */
            if (fd > 2 && fd != dir) sys(SYS_close, fd, 0, 0, 0);
            at += entry->reclen;
        }
    }
    sys(SYS_close, dir, 0, 0, 0);
}

/* A child starts as systemd starts a service: every signal at its default disposition, none blocked. What the
 * daemon inherited must not reach the program: SIGINT and SIGQUIT ignored by a non-interactive shell that put
 * foundationd in the background (an ignored signal stays ignored across exec), glibc's internal signals (32:
 * SIGCANCEL, 33: SIGSETXID) that its posix_spawn child sets to SIG_IGN, a mask the daemon's starter left. A
 * handler cannot be inherited (exec resets it), so only ignored ones change. glibc's sigaction refuses 32 and
 * 33, hence the system calls. A zero kernel sigaction is SIG_DFL with no flags; a zero set unblocks all. */
static void default_signals(void) {
    unsigned long dfl[4] = {0, 0, 0, 0};
    unsigned long none = 0;
    for (long sig = 1; sig <= 64; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) sys(SYS_rt_sigaction, sig, (long)dfl, 0, 8);
    }
    sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);
}

static int run(int argc, char **argv, char **envp) {
    if (argc < 3) {
        say("usage: foundation-exec DAEMON_PID PROGRAM [ARG...]\n");
        return EXIT_CANNOT;
    }
    long daemon = parse_pid(argv[1]);
    long err = sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
    if (err < 0) return fail("prctl", "(PR_SET_PDEATHSIG)", -err);
    if (sys(SYS_getppid, 0, 0, 0, 0) != daemon) return EXIT_CANNOT; /* the daemon died before the signal was armed */
    close_from_3();
    default_signals();
    err = sys(SYS_execve, (long)argv[2], (long)(argv + 2), (long)envp, 0);
    return fail("cannot execute ", argv[2], -err);
}
