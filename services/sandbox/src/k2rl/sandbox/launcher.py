"""The in-sandbox launcher: sets rlimits, runs the program as its child, reports its rusage.

Why a launcher at all: (1) RLIMIT_NPROC must be set inside the new user namespace, or every
sandbox of the same uid would share one process budget; (2) the only process that can
``wait4`` the program, and so learn its own CPU time and peak RSS (not bwrap's, which
inherits the service's RSS through fork), is its parent; (3) it tells "the program exited
with 137" apart from "the program was killed by SIGKILL", and a program that never ran
(sandbox setup failed) from one that failed.

It is C, compiled once when the service starts, because a Python launcher would add an
interpreter start-up to every execution. The report goes to an inherited pipe the program
itself never sees (closed in the child before exec).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from k2rl.sandbox.model import Limits

SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* usage: launch REPORT_FD CPU_S AS_BYTES NPROC FSIZE NOFILE -- ARGV... */
static void limit(int resource, rlim_t soft, rlim_t hard) {
    struct rlimit value = {soft, hard};
    if (setrlimit(resource, &value) != 0) { perror("k2rl-launch: setrlimit"); _exit(121); }
}

int main(int argc, char **argv) {
    if (argc < 9 || strcmp(argv[7], "--") != 0) {
        fprintf(stderr, "k2rl-launch: bad arguments\n");
        return 122;
    }
    int report = atoi(argv[1]);
    rlim_t cpu = strtoull(argv[2], NULL, 10);
    limit(RLIMIT_CPU, cpu, cpu + 1);
    limit(RLIMIT_AS, strtoull(argv[3], NULL, 10), strtoull(argv[3], NULL, 10));
    limit(RLIMIT_NPROC, strtoull(argv[4], NULL, 10), strtoull(argv[4], NULL, 10));
    limit(RLIMIT_FSIZE, strtoull(argv[5], NULL, 10), strtoull(argv[5], NULL, 10));
    limit(RLIMIT_NOFILE, strtoull(argv[6], NULL, 10), strtoull(argv[6], NULL, 10));
    limit(RLIMIT_CORE, 0, 0);
    pid_t child = fork();
    if (child < 0) { perror("k2rl-launch: fork"); return 123; }
    if (child == 0) {
        close(report);
        execvp(argv[8], &argv[8]);
        fprintf(stderr, "k2rl-launch: cannot execute %s: %s\n", argv[8], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage usage;
    while (wait4(child, &status, 0, &usage) < 0) {
        if (errno != EINTR) { perror("k2rl-launch: wait4"); return 124; }
    }
    long cpu_us = (long)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000L
                  + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    int signalled = WIFSIGNALED(status);
    int code = signalled ? WTERMSIG(status) : WEXITSTATUS(status);
    dprintf(report, "%d %d %ld %ld\n", signalled, code, cpu_us, (long)usage.ru_maxrss);
    close(report);
    return signalled ? 128 + code : code;
}
"""

INSIDE_PATH = "/.k2rl-launch"


@dataclass(frozen=True)
class LaunchReport:
    """What the launcher saw of the program."""

    exit_code: int
    signal: int
    cpu_time_ms: float
    peak_memory_bytes: int


def parse_report(data: bytes) -> LaunchReport | None:
    try:
        signalled, code, cpu_us, maxrss_kb = (int(x) for x in data.split())
    except ValueError:
        return None
    return LaunchReport(0 if signalled else code, code if signalled else 0, cpu_us / 1000, maxrss_kb * 1024)


def launcher_args(launcher: str, report_fd: int, limits: Limits) -> list[str]:
    cpu_s = max(1, -(-limits.cpu_time_ms // 1000))
    return [launcher, str(report_fd), str(cpu_s), str(limits.memory_bytes), str(limits.max_processes),
            str(limits.max_file_size_bytes), "256", "--"]


def build_launcher(directory: Path, compiler: str = "cc") -> Path:
    """Compile the launcher into ``directory`` (once per source version) and return its path."""
    return build_c_program(directory, "k2rl-launch", SOURCE, compiler)


def build_c_program(directory: Path, name: str, source_text: str, compiler: str = "cc") -> Path:
    """Compile a one-file C program into ``directory`` (once per source version); its path."""
    digest = hashlib.sha256(source_text.encode()).hexdigest()[:16]
    binary = directory / f"{name}-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    source = directory / f"{name}-{digest}.c"
    source.write_text(source_text)
    partial = directory / f".{name}-{digest}.{os.getpid()}"
    done = subprocess.run([compiler, "-O2", "-o", str(partial), str(source)], capture_output=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise OSError(f"cannot compile {name} with {compiler}: "
                      f"{done.stderr.decode(errors='replace').strip()}")
    partial.chmod(0o755)
    partial.replace(binary)  # atomic: replicas sharing the directory never see half a file
    return binary
