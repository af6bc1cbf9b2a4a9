"""How a program is confined: the bubblewrap command line around the launcher and its argv.

Layers, outermost first (the README's protections table lists them with what each stops):

* bwrap as an unprivileged user (``setpriv`` drops to ``sandbox_uid`` when the service runs
  as root, so RLIMIT_NPROC is enforced: the kernel exempts uid 0 from it);
* new user, pid, network, ipc, uts and cgroup namespaces, nested user namespaces disabled;
* a fresh root: the runtime directories (``/usr`` ...) bound read-only, fresh ``/proc`` and
  ``/dev``, a size-capped tmpfs ``/tmp``, the working directory the only writable bind;
* a cleared environment, a new session (no TIOCSTI into the service's terminal),
  ``--die-with-parent`` so nothing outlives the service;
* a seccomp deny-list (see seccomp.py);
* rlimits set by the launcher (launcher.py) *inside* the namespaces, which also reports the
  program's own exit status, CPU time and peak RSS.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k2rl.sandbox.launcher import INSIDE_PATH, build_launcher, launcher_args
from k2rl.sandbox.model import Limits
from k2rl.sandbox.seccomp import filter_program

log = logging.getLogger(__name__)

SANDBOX_WORKDIR = "/workspace"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Top-level directories that merged-/usr systems make symlinks into /usr.
_MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
UNSAFE_WARNING = (
    "UNSAFE DEV MODE: bubblewrap isolation is OFF. Programs run as plain processes with only "
    "rlimits; they can read the host filesystem, reach the network and signal other processes. "
    "Never expose this service to untrusted code."
)


class IsolationUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here, and unsafe mode is off."""


@dataclass(frozen=True)
class IsolationConfig:
    work_root: Path
    bwrap_path: str = "bwrap"
    launcher_compiler: str = "cc"
    setpriv_path: str = "setpriv"
    ro_binds: tuple[str, ...] = ("/usr", "/etc/alternatives", "/etc/ld.so.cache")
    tmp_size_bytes: int = 64 * 1024 * 1024
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    seccomp: bool = True
    unsafe_dev_mode: bool = False


@dataclass(frozen=True)
class PreparedCommand:
    """Everything ``subprocess.Popen`` needs for one confined run."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    report_fd: int
    pass_fds: tuple[int, ...] = ()
    owned_fds: tuple[int, ...] = field(default=())

    def close_report(self) -> None:
        try:
            os.close(self.report_fd)
        except OSError:
            pass

    def close_fds(self) -> None:
        for fd in self.owned_fds:
            try:
                os.close(fd)
            except OSError:
                pass


class Isolation:
    """Builds confined commands; ``features`` says which protections are really in force."""

    def __init__(self, config: IsolationConfig) -> None:
        self.config = config
        self._drop_to_uid = os.geteuid() == 0
        self._seccomp = filter_program() if config.seccomp else None
        self.launcher = build_launcher(config.work_root, config.launcher_compiler)
        self.bwrap_ok = False
        if not config.unsafe_dev_mode:
            problem = self.probe()
            if problem:
                raise IsolationUnavailable(
                    f"bubblewrap isolation does not work here ({problem}). Install bubblewrap "
                    "(apt-get install bubblewrap) and allow unprivileged user namespaces "
                    "(sysctl kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04), "
                    "or set K2RL_UNSAFE_DEV_MODE=true to run programs unconfined for development."
                )
            self.bwrap_ok = True
        else:
            log.warning(UNSAFE_WARNING)

    @property
    def features(self) -> list[str]:
        base = ["rlimits", "process_group_kill", "wall_timeout", "output_limit"]
        if not self.bwrap_ok:
            return base
        features = [*base, "user_namespace", "pid_namespace", "network_namespace", "ipc_namespace",
                    "uts_namespace", "cgroup_namespace", "no_nested_user_namespace", "read_only_root",
                    "private_tmp", "private_workdir", "clear_env", "new_session", "die_with_parent"]
        if self._drop_to_uid:
            features.append("unprivileged_uid")
        if self._seccomp is not None:
            features.append("seccomp")
        return features

    def probe(self) -> str:
        """Empty if a trivial confined run works, else what went wrong."""
        probe_limits = Limits(10_000, 10_000, 256 * 1024 * 1024, 16, 1024 * 1024, 1024 * 1024)
        with tempfile.TemporaryDirectory(dir=self.config.work_root) as workdir:
            if self.file_owner is not None:
                os.chown(workdir, *self.file_owner)
            try:
                command = self.prepare(["true"], Path(workdir), {}, probe_limits)
            except OSError as error:
                return str(error)
            try:
                done = subprocess.run(command.argv, env=command.env, cwd="/", pass_fds=command.pass_fds,
                                      capture_output=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired) as error:
                return f"{self.config.bwrap_path}: {error}"
            finally:
                command.close_fds()
                command.close_report()
        if done.returncode != 0:
            return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return ""

    def prepare(self, argv: Sequence[str], workdir: Path, env: Mapping[str, str], limits: Limits) -> PreparedCommand:
        """The confined command for ``argv`` run in ``workdir`` (host path) with ``env``.

        The caller closes ``owned_fds`` once the process is spawned and reads the launcher's
        report from ``report_fd`` after it exits.
        """
        program_env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_WORKDIR, "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1", **env}
        report_read, report_write = os.pipe()
        os.set_inheritable(report_read, False)
        if self.config.unsafe_dev_mode:
            program_env["HOME"] = str(workdir)
            inner = [*launcher_args(str(self.launcher), report_write, limits), *argv]
            return PreparedCommand(inner, program_env, str(workdir), report_read, (report_write,),
                                   owned_fds=(report_write,))
        inner = [*launcher_args(INSIDE_PATH, report_write, limits), *argv]
        args = [self.config.bwrap_path, "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
        for link in _MERGED_USR_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        for path in self.config.ro_binds:
            args += ["--ro-bind-try", path, path]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(self.config.tmp_size_bytes), "--tmpfs", "/tmp",
                 "--ro-bind", str(self.launcher), INSIDE_PATH,
                 "--bind", str(workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
        for key, value in program_env.items():
            args += ["--setenv", key, value]
        pass_fds: tuple[int, ...] = (report_write,)
        if self._seccomp is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, self._seccomp)  # a few hundred bytes: fits the pipe buffer
            os.close(write_end)
            args += ["--seccomp", str(read_end)]
            pass_fds = (report_write, read_end)
        args += ["--", *inner]
        if self._drop_to_uid:
            # setpriv, not Popen(user=...): changing uid in the child forces a real fork() of
            # this multi-threaded (gRPC) process, whose atfork handlers can crash the child;
            # without it Popen uses vfork, which runs no handlers.
            config = self.config
            args = [config.setpriv_path, f"--reuid={config.sandbox_uid}", f"--regid={config.sandbox_gid}",
                    "--clear-groups", *args]
        return PreparedCommand(args, {"PATH": os.environ.get("PATH", SANDBOX_PATH)}, "/", report_read, pass_fds,
                               pass_fds)

    @property
    def file_owner(self) -> tuple[int, int] | None:
        """Owner the service gives files it writes for programs (the uid they run as), if any."""
        if self._drop_to_uid and not self.config.unsafe_dev_mode:
            return self.config.sandbox_uid, self.config.sandbox_gid
        return None
