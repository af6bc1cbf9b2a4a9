"""The Kubernetes runtime: a session is a Pod created from an image (SWE-style environments).

Each session gets one Pod from its image: resource requests and limits, no service-account
token, no service links, non-root with no privilege escalation and no capabilities, the
RuntimeDefault seccomp profile, and a NetworkPolicy (created once per namespace) that denies
all ingress and egress of sandbox pods. Commands run through the exec API (the websocket
channel protocol via ``kubernetes.stream``) wrapped in a POSIX ``sh`` prelude that sets the
execution's rlimits; the host enforces the wall and output limits and, on a timeout, kills
everything in the pod but its pid 1 (``kill -KILL -1`` from a second exec). Files move
through exec of ``cat``/``tail``/``head`` with the content on stdin, which needs the v5
channel protocol (Kubernetes >= 1.30) to close stdin.

Pods carry the label ``k2rl.io/sandbox-owner=<instance id>``; at start-up the service
deletes every pod of its instance that no live session owns (those of a crashed
predecessor), and ``activeDeadlineSeconds`` bounds each pod's life even if no replica ever
comes back.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from k2rl.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from k2rl.sandbox.model import Limits, RunResult, Status
from k2rl.sandbox.runtime import KillSwitch, classify

log = logging.getLogger(__name__)

MANAGED_BY = ("app.kubernetes.io/managed-by", "k2rl-sandbox")
OWNER_LABEL = "k2rl.io/sandbox-owner"
SESSION_LABEL = "k2rl.io/session-id"
SESSION_LABELS_ANNOTATION = "k2rl.io/session-labels"
NETWORK_POLICY_NAME = "k2rl-sandbox-deny-all"
CONTAINER = "sandbox"
V5_CHANNEL_PROTOCOL = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
# Container waiting reasons that will not resolve by waiting longer.
_HOPELESS_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                               "CreateContainerError", "RunContainerError"})
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LIMIT_FAILURE = b"k2rl: "
_FILE_OP_LIMIT_S = 60.0
_NO_SUCH_FILE = 3


@dataclass(frozen=True)
class PodConfig:
    """How sandbox pods are made (from ``SandboxSettings.k8s_*``)."""

    namespace: str
    instance_id: str
    default_image: str = ""
    workdir: str = "/workspace"
    keepalive_command: tuple[str, ...] = ("sleep", "infinity")
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    ephemeral_storage_limit: str = "2Gi"
    workdir_size_limit: str = "1Gi"
    run_as_user: int = 65534
    run_as_group: int = 65534
    runtime_class_name: str = ""
    start_timeout_s: float = 300.0
    max_lifetime_s: int = 86_400


def owner_selector(instance_id: str) -> str:
    return f"{MANAGED_BY[0]}={MANAGED_BY[1]},{OWNER_LABEL}={instance_id}"


def label_value(text: str) -> str:
    """``text`` made a valid label value (<= 63 of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return cleaned.strip("-_.") or "x"


def pod_manifest(name: str, session_id: str, image: str, limits: Limits, labels: Mapping[str, str],
                 config: PodConfig) -> dict[str, Any]:
    """The Pod of one session: locked down, limited, labelled for garbage collection."""
    memory = str(limits.memory_bytes)
    container_security = {
        "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
        "runAsUser": config.run_as_user, "runAsGroup": config.run_as_group,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": config.max_lifetime_s,
        "securityContext": {"runAsNonRoot": True, "runAsUser": config.run_as_user,
                            "runAsGroup": config.run_as_group, "fsGroup": config.run_as_group,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER, "image": image, "command": list(config.keepalive_command),
            "workingDir": config.workdir, "stdin": False, "tty": False,
            "resources": {
                "requests": {"cpu": config.cpu_request, "memory": memory},
                "limits": {"cpu": config.cpu_limit, "memory": memory,
                           "ephemeral-storage": config.ephemeral_storage_limit},
            },
            "securityContext": container_security,
            "volumeMounts": [{"name": "workspace", "mountPath": config.workdir},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "workspace", "emptyDir": {"sizeLimit": config.workdir_size_limit}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": config.workdir_size_limit}}],
    }
    if config.runtime_class_name:
        spec["runtimeClassName"] = config.runtime_class_name
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY[0]: MANAGED_BY[1], OWNER_LABEL: config.instance_id, SESSION_LABEL: session_id},
            "annotations": {SESSION_LABELS_ANNOTATION: json.dumps(dict(labels), sort_keys=True)},
        },
        "spec": spec,
    }


def network_policy_manifest(config: PodConfig) -> dict[str, Any]:
    """Denies all ingress and egress of every k2rl sandbox pod in the namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": NETWORK_POLICY_NAME, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
        "spec": {"podSelector": {"matchLabels": {MANAGED_BY[0]: MANAGED_BY[1]}},
                 "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
    }


def exec_command(argv: Sequence[str], limits: Limits, env: Mapping[str, str], workdir: str) -> list[str]:
    """argv wrapped in a ``sh`` prelude that applies the execution's rlimits, cwd and env.

    argv travels as positional parameters (``exec "$@"``), never through the shell's parser.
    No RLIMIT_NPROC: without a user namespace it would count every process of the uid on the
    node; processes are bounded by the kubelet's pod pids limit instead.
    """
    for name in env:
        if not _SHELL_NAME.match(name):
            raise InvalidArgument(f"environment variable {name!r} is not a valid name in a pod (letters, digits, _)",
                                  field="env")
    cpu_s = max(1, -(-limits.cpu_time_ms // 1000))
    limits_part = (f"ulimit -t {cpu_s} && ulimit -v {max(1, limits.memory_bytes // 1024)} && "
                   f"ulimit -f {max(1, limits.max_file_size_bytes // 512)} && ulimit -n 256 && ulimit -c 0")
    exports = "".join(f"export {name}={shlex.quote(value)}; " for name, value in env.items())
    script = (f"{limits_part} || {{ echo 'k2rl: cannot set limits' >&2; exit 125; }}; "
              f"cd {shlex.quote(workdir)} || {{ echo 'k2rl: no workdir' >&2; exit 125; }}; {exports}exec \"$@\"")
    return ["sh", "-c", script, "k2rl-exec", *argv]


def decode_exit(status: bytes) -> tuple[int, int] | None:
    """(exit code, signal) from the exec error channel's Status; None if it says no exit.

    Container runtimes report a signalled process as 128 + signal, as shells do.
    """
    try:
        message = json.loads(status)
    except ValueError:
        return None
    if message.get("status") == "Success":
        return 0, 0
    if message.get("reason") != "NonZeroExitCode":
        return None
    for cause in message.get("details", {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            code = int(cause.get("message", "0"))
            if 128 < code < 128 + 65:
                return 0, code - 128
            return code, 0
    return None


class ExecChannel(Protocol):
    """The part of ``kubernetes.stream.ws_client.WSClient`` an execution uses."""

    subprotocol: str | None

    def is_open(self) -> bool: ...
    def update(self, timeout: float = 0) -> None: ...
    def read_channel(self, channel: int, timeout: float = 0) -> bytes: ...
    def write_stdin(self, data: bytes) -> None: ...
    def close_channel(self, channel: int) -> None: ...
    def close(self, **kwargs: Any) -> None: ...


class PodApi:
    """The Kubernetes API calls of the runtime, through the official client."""

    def __init__(self, namespace: str, api_url: str = "", verify_ssl: bool = True) -> None:
        from kubernetes import client, config

        if api_url:
            configuration = client.Configuration()
            configuration.host = api_url
            configuration.verify_ssl = verify_ssl
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
        self.namespace = namespace
        self._client = client
        self.core = client.CoreV1Api(client.ApiClient(configuration))
        self.networking = client.NetworkingV1Api(self.core.api_client)
        # kubernetes.stream swaps call_api on the ApiClient for the duration of the call:
        # exec gets an ApiClient of its own, and one connect at a time on it.
        self._exec_core = client.CoreV1Api(client.ApiClient(configuration))
        self._exec_lock = threading.Lock()

    def ensure_network_policy(self, manifest: dict[str, Any]) -> bool:
        """Create the policy unless it exists; True if it was created now."""
        try:
            self.networking.create_namespaced_network_policy(self.namespace, manifest)
            return True
        except self._client.ApiException as error:
            if error.status == 409:
                return False
            raise

    def create_pod(self, manifest: dict[str, Any]) -> None:
        """Create a pod; a refusal by the API server becomes FailedPrecondition, its absence Unavailable."""
        try:
            self.core.create_namespaced_pod(self.namespace, manifest)
        except self._client.ApiException as error:
            message = f"Kubernetes did not create pod {manifest['metadata']['name']}: {error.status} {error.reason}"
            detail = _status_message(error.body)
            if 400 <= error.status < 500 and error.status != 429:
                raise FailedPrecondition(f"{message}: {detail}") from None
            raise Unavailable(f"{message}: {detail}") from None
        except OSError as error:  # urllib3's connection errors
            raise Unavailable(f"Kubernetes API unreachable: {error}") from None

    def read_pod(self, name: str) -> dict[str, Any]:
        pod = self.core.read_namespaced_pod(name, self.namespace)
        return self.core.api_client.sanitize_for_serialization(pod)

    def delete_pod(self, name: str) -> bool:
        """Delete now; False if it was already gone."""
        try:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0,
                                            propagation_policy="Background")
            return True
        except self._client.ApiException as error:
            if error.status == 404:
                return False
            raise

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return [self.core.api_client.sanitize_for_serialization(p) for p in pods.items]

    def open_exec(self, pod: str, command: list[str], stdin: bool) -> ExecChannel:
        from kubernetes.stream import stream

        with self._exec_lock:
            return stream(self._exec_core.connect_get_namespaced_pod_exec, pod, self.namespace, command=command,
                          container=CONTAINER, stdin=stdin, stdout=True, stderr=True, tty=False,
                          _preload_content=False, binary=True)


def _status_message(body: object) -> str:
    """The ``message`` of a Kubernetes Status body, else the body."""
    try:
        return str(json.loads(body)["message"])  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError):
        return str(body or "")[:300]


@dataclass
class ExecOutcome:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    status: bytes = b""
    timed_out: bool = False
    output_killed: bool = False
    interrupted: bool = False
    error: str = ""


def _pump(channel: ExecChannel, outcome: ExecOutcome, cap: int) -> None:
    for number, buffer, flag in ((STDOUT, outcome.stdout, "stdout_truncated"),
                                 (STDERR, outcome.stderr, "stderr_truncated")):
        data = channel.read_channel(number)
        if not data:
            continue
        room = cap - len(buffer)
        buffer += data[:max(room, 0)]
        if len(data) > room:
            setattr(outcome, flag, True)
            outcome.output_killed = True


def run_exec(api: PodApi, pod: str, command: list[str], stdin: bytes, timeout_s: float, max_output: int,
             kill_switch: KillSwitch | None = None) -> ExecOutcome:
    """Run one exec to its end, the deadline or the output cap, whichever is first."""
    outcome = ExecOutcome()
    deadline = time.monotonic() + timeout_s
    try:
        channel = api.open_exec(pod, command, stdin=bool(stdin))
    except Exception as error:  # noqa: BLE001 - any failure to connect is a sandbox error
        outcome.error = f"exec in pod {pod} failed: {error}"
        return outcome
    interrupted = threading.Event()

    def interrupt() -> None:
        interrupted.set()
        _close_quietly(channel)

    key = id(channel)
    if kill_switch is not None:
        kill_switch.register(key, interrupt)
    try:
        if stdin:
            if channel.subprotocol != V5_CHANNEL_PROTOCOL:
                outcome.error = (f"the API server speaks {channel.subprotocol}, not {V5_CHANNEL_PROTOCOL}: stdin "
                                 "cannot be closed (Kubernetes >= 1.30 needed for stdin and file writes)")
                return outcome
            for start in range(0, len(stdin), 1 << 20):
                channel.write_stdin(stdin[start:start + (1 << 20)])
            channel.close_channel(STDIN)
        while channel.is_open() and not interrupted.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.timed_out = True
                break
            channel.update(timeout=min(remaining, 1.0))
            _pump(channel, outcome, max_output)
            if outcome.output_killed:
                break
        if not (outcome.timed_out or outcome.output_killed or interrupted.is_set()):
            _pump(channel, outcome, max_output)
            outcome.status = channel.read_channel(ERROR)
    except Exception as error:  # noqa: BLE001 - a dropped stream is a sandbox error, not a crash
        if not interrupted.is_set():
            outcome.error = f"exec stream of pod {pod} broke: {type(error).__name__}: {error}"
    finally:
        outcome.interrupted = interrupted.is_set()
        if kill_switch is not None:
            kill_switch.unregister(key)
        _close_quietly(channel)
    return outcome


def _close_quietly(channel: ExecChannel) -> None:
    try:
        channel.close(timeout=0)  # no waiting for the server's close frame
    except Exception:  # noqa: BLE001,S110 - closing an already broken socket
        pass


class PodSandbox:
    """One session's pod, used like a working directory and like a runtime by the Executor."""

    def __init__(self, api: PodApi, name: str, config: PodConfig) -> None:
        self.api = api
        self.name = name
        self.config = config
        self.path = PurePosixPath(config.workdir)

    def run(self, argv: Sequence[str], workdir: object, limits: Limits, *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, kill_switch: KillSwitch | None = None) -> RunResult:
        command = exec_command(argv, limits, env or {}, self.config.workdir)
        started = time.monotonic()
        outcome = run_exec(self.api, self.name, command, stdin, limits.wall_time_ms / 1000, limits.max_output_bytes,
                           kill_switch)
        if outcome.timed_out or outcome.output_killed:
            self.kill_all()
        wall_ms = (time.monotonic() - started) * 1000
        stdout, stderr = bytes(outcome.stdout), bytes(outcome.stderr)
        truncated = {"stdout_truncated": outcome.stdout_truncated, "stderr_truncated": outcome.stderr_truncated}
        if outcome.interrupted:
            return RunResult(Status.RUNTIME_ERROR, 0, signal.SIGKILL, stdout, stderr, wall_time_ms=wall_ms,
                             error="the session was closed", **truncated)
        exit_status = decode_exit(outcome.status)
        if outcome.error or (exit_status is None and not (outcome.timed_out or outcome.output_killed)):
            message = outcome.error or f"exec ended without an exit status: {outcome.status[:300]!r}"
            return RunResult(Status.SANDBOX_ERROR, stdout=stdout, stderr=stderr, wall_time_ms=wall_ms, error=message)
        exit_code, signal_number = exit_status or (0, signal.SIGKILL)
        if exit_code == 125 and stderr.startswith(_LIMIT_FAILURE):
            return RunResult(Status.SANDBOX_ERROR, exit_code, stderr=stderr, wall_time_ms=wall_ms,
                             error=stderr.decode(errors="replace").strip())
        status = classify(exit_code=exit_code, signal_number=signal_number, wall_killed=outcome.timed_out,
                          output_killed=outcome.output_killed, cpu_time_ms=0.0, limits=limits, stderr=stderr,
                          peak_memory_bytes=0)
        return RunResult(status, exit_code, signal_number, stdout, stderr, wall_time_ms=wall_ms, **truncated)

    def kill_all(self) -> None:
        """SIGKILL every process of the sandbox user in the pod except pid 1 (the keep-alive)."""
        outcome = run_exec(self.api, self.name, ["sh", "-c", "kill -KILL -1 2>/dev/null; exit 0"], b"",
                           _FILE_OP_LIMIT_S, 4096)
        if outcome.error or decode_exit(outcome.status) != (0, 0):
            log.warning("could not kill the processes of pod %s: %s", self.name, outcome.error or outcome.status)

    def _file_op(self, script: str, args: Sequence[str], stdin: bytes, max_output: int, what: str) -> ExecOutcome:
        command = ["sh", "-c", f"cd {shlex.quote(self.config.workdir)} || exit 125; {script}", "k2rl-file", *args]
        outcome = run_exec(self.api, self.name, command, stdin, _FILE_OP_LIMIT_S, max_output)
        if outcome.error or outcome.timed_out:
            raise Unavailable(f"cannot {what} in pod {self.name}: {outcome.error or 'timed out'}")
        return outcome

    def write(self, relative: PurePosixPath, content: bytes, *, field: str, append: bool = False,
              mode: int = 0o644, owner: tuple[int, int] | None = None) -> int:
        """Write a file in the pod's working directory (parents created); returns its size."""
        script = ('d=$(dirname -- "$1") && mkdir -p -- "$d" && '
                  'if [ "$3" = append ]; then cat >> "$1"; else cat > "$1"; fi && chmod "$2" "$1" && wc -c < "$1"')
        outcome = self._file_op(script, [str(relative), f"{mode:o}", "append" if append else "replace"], content,
                                4096, f"write {relative}")
        exit_status = decode_exit(outcome.status)
        if exit_status != (0, 0):
            raise InvalidArgument(f"cannot write {relative}: {outcome.stderr.decode(errors='replace').strip()}",
                                  field=field)
        return int(outcome.stdout.strip() or 0)

    def read(self, relative: PurePosixPath, offset: int, max_bytes: int, *, field: str) -> tuple[bytes, int]:
        """Up to ``max_bytes`` from ``offset`` of a file in the pod, and the file's size."""
        script = (f'[ -f "$1" ] || exit {_NO_SUCH_FILE}; wc -c < "$1" && '
                  'tail -c +"$2" "$1" | head -c "$3"')
        outcome = self._file_op(script, [str(relative), str(offset + 1), str(max_bytes)], b"", max_bytes + 64,
                                f"read {relative}")
        exit_status = decode_exit(outcome.status)
        if exit_status == (_NO_SUCH_FILE, 0):
            raise NotFound(f"no file {relative} in the working directory", field=field)
        if exit_status != (0, 0):
            raise InvalidArgument(f"cannot read {relative}: {outcome.stderr.decode(errors='replace').strip()}",
                                  field=field)
        size_line, _, content = bytes(outcome.stdout).partition(b"\n")
        return content, int(size_line.strip())

    def chown_tree(self, owner: tuple[int, int]) -> None:
        """Files in the pod already belong to the pod's user."""

    def remove(self) -> None:
        """Delete the pod (the session's working directory goes with it)."""
        try:
            self.api.delete_pod(self.name)
        except Exception as error:  # noqa: BLE001 - the start-up collection retries it
            log.warning("could not delete pod %s: %s", self.name, error)


class PodManager:
    """Creates sessions' pods, keeps the namespace's NetworkPolicy, collects orphaned pods."""

    def __init__(self, api: PodApi, config: PodConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.config = config
        self._sleep = sleep

    def start(self, live_session_ids: Collection[str] = ()) -> list[str]:
        """Ensure the NetworkPolicy and delete orphaned pods of this instance; returns their names."""
        if self.api.ensure_network_policy(network_policy_manifest(self.config)):
            log.info("created NetworkPolicy %s in namespace %s", NETWORK_POLICY_NAME, self.config.namespace)
        return self.collect_garbage(live_session_ids)

    def collect_garbage(self, live_session_ids: Collection[str]) -> list[str]:
        deleted = []
        for pod in self.api.list_pods(owner_selector(self.config.instance_id)):
            metadata = pod.get("metadata", {})
            if metadata.get("labels", {}).get(SESSION_LABEL) in live_session_ids:
                continue
            if self.api.delete_pod(metadata["name"]):
                deleted.append(metadata["name"])
        if deleted:
            log.info("deleted %d orphaned sandbox pods of instance %s: %s", len(deleted), self.config.instance_id,
                     ", ".join(deleted))
        return deleted

    def create(self, session_id: str, image: str, limits: Limits, labels: Mapping[str, str]) -> PodSandbox:
        """Create the session's pod and wait until it runs; the pod is deleted again on failure."""
        image = image or self.config.default_image
        if not image:
            raise InvalidArgument("no image given and K2RL_K8S_DEFAULT_IMAGE is not set", field="image")
        name = f"k2rl-sbx-{session_id}"[:63]
        self.api.create_pod(pod_manifest(name, session_id, image, limits, labels, self.config))
        sandbox = PodSandbox(self.api, name, self.config)
        try:
            self._wait_running(name, image)
        except BaseException:
            sandbox.remove()
            raise
        return sandbox

    def _wait_running(self, name: str, image: str) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            status = self.api.read_pod(name).get("status", {})
            phase = status.get("phase", "")
            if phase == "Running":
                return
            if phase in ("Failed", "Succeeded"):
                raise FailedPrecondition(f"pod {name} ({image}) ended before it ran: {status.get('message', phase)}")
            for container in status.get("containerStatuses", []) or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in _HOPELESS_WAITING:
                    raise FailedPrecondition(f"pod {name} cannot start image {image}: {waiting.get('reason')}: "
                                             f"{waiting.get('message', '')}")
            if time.monotonic() >= deadline:
                raise Unavailable(f"pod {name} ({image}) not running after {self.config.start_timeout_s:.0f} s "
                                  f"(phase {phase or 'unknown'})")
            self._sleep(0.5)
