/*
 * foundation-exec DAEMON_PID PROGRAM [ARG...]
 *
 * The one exec between foundationd's fork and a child's program, doing what no Python may do there (the daemon
 * is multi-threaded once ZeroMQ runs): arm the parent-death signal, make sure the parent is still the daemon
 * that forked us (it may have died before the signal was armed), then exec the program, which keeps this pid.
 * It replaces `setpriv --pdeathsig KILL -- sh -c GUARD ...` (three execs) when a C compiler was there at
 * install time; foundationd falls back to that chain otherwise. PROGRAM must be a path (the daemon resolves it).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fputs("usage: foundation-exec DAEMON_PID PROGRAM [ARG...]\n", stderr);
        return 127;
    }
    long daemon = strtol(argv[1], NULL, 10);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
        perror("foundation-exec: prctl(PR_SET_PDEATHSIG)");
        return 127;
    }
    if ((long)getppid() != daemon) {
        return 127; /* the daemon died before the signal was armed: go with it */
    }
    execv(argv[2], argv + 2);
    fprintf(stderr, "foundation-exec: cannot execute %s: %s\n", argv[2], strerror(errno));
    return 127;
}
