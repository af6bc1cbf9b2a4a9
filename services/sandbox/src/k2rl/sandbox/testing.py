"""TEST DOUBLE of the Kubernetes API for the sandbox's pod runtime. Not for production.

``FakeKubernetesApi`` serves, on 127.0.0.1, the few endpoints the pod runtime calls (pods:
create, read, list by label selector, delete, exec; network policies: create) and records
every request (method, path, query, JSON body) so tests check exactly what the official
client sent. Exec speaks the websocket channel protocol (RFC 6455 framing, subprotocols
v5/v4.channel.k8s.io: channel 0 stdin, 1 stdout, 2 stderr, 3 the final Status, 255 close).

With ``run_pods=True`` a "pod" is a real bubblewrap sandbox (pid 1 = the pod's command, its
own user/pid/mount/net namespaces, a private directory bound at the container's workingDir,
running as the pod's runAsUser) and exec enters it with ``nsenter``, so commands, files,
``kill -1`` and timeouts behave as in a container. What it does not model: image pulls
(every image is the host's /usr), scheduling, resource enforcement by a kubelet, and the
NetworkPolicy itself (recorded, not enforced; the pod has no network anyway).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+))?(?P<exec>/exec)?$")
_POLICIES = re.compile(r"^/apis/networking\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/networkpolicies$")
_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any] | None


@dataclass
class FakePod:
    manifest: dict[str, Any]
    phase: str = "Running"
    waiting_reason: str = ""
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    execs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": self.phase}
        if self.waiting_reason:
            status["containerStatuses"] = [{"name": "sandbox", "image": "x", "imageID": "", "ready": False,
                                            "restartCount": 0,
                                            "state": {"waiting": {"reason": self.waiting_reason, "message": "double"}}}]
        return {**self.manifest, "status": status}


class FakeKubernetesApi:
    """A recording Kubernetes API double; ``with FakeKubernetesApi() as api: api.url``."""

    def __init__(self, namespace: str = "k2rl-test", run_pods: bool = True, protocol: str = "v5.channel.k8s.io",
                 unpullable_images: tuple[str, ...] = ()) -> None:
        self.namespace = namespace
        self.run_pods = run_pods
        self.protocol = protocol
        self.unpullable_images = unpullable_images
        self.requests: list[RecordedRequest] = []
        self.pods: dict[str, FakePod] = {}
        self.network_policies: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._root = Path(tempfile.mkdtemp(prefix="k2rl-fake-k8s-"))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-k8s", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubernetesApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        for pod in list(self.pods.values()):
            self._stop_pod(pod)
        shutil.rmtree(self._root, ignore_errors=True)

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        pattern = re.compile(path_pattern)
        with self._lock:
            return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    def add_pod(self, manifest: dict[str, Any]) -> None:
        """Put a pod in the namespace without the client (e.g. one left by a crashed service)."""
        with self._lock:
            self.pods[manifest["metadata"]["name"]] = FakePod(manifest)

    # -- pods ---------------------------------------------------------------------------------

    def create_pod(self, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = manifest["metadata"]["name"]
        with self._lock:
            if name in self.pods:
                return 409, _status(409, "AlreadyExists", f"pods {name!r} already exists")
        image = manifest["spec"]["containers"][0]["image"]
        pod = FakePod(manifest)
        if image in self.unpullable_images:
            pod.phase, pod.waiting_reason = "Pending", "ErrImagePull"
        elif self.run_pods:
            self._start_pod(pod)
        with self._lock:
            self.pods[name] = pod
        return 201, pod.to_json()

    def _start_pod(self, pod: FakePod) -> None:
        container = pod.manifest["spec"]["containers"][0]
        security = pod.manifest["spec"].get("securityContext", {})
        pod.directory = Path(tempfile.mkdtemp(prefix="pod-", dir=self._root))
        info_read, info_write = os.pipe()
        argv = ["bwrap", "--unshare-all", "--die-with-parent", "--as-pid-1",
                "--uid", str(security.get("runAsUser", 65534)), "--gid", str(security.get("runAsGroup", 65534))]
        for link in ("/bin", "/sbin", "/lib", "/lib64"):
            if os.path.islink(link):
                argv += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                argv += ["--ro-bind", link, link]
        argv += ["--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
                 "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                 "--bind", str(pod.directory), container["workingDir"], "--chdir", container["workingDir"],
                 "--info-fd", str(info_write), "--", *container["command"]]
        pod.process = subprocess.Popen(argv, pass_fds=(info_write,), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        os.close(info_write)
        with os.fdopen(info_read, "rb") as info:
            data = info.read()
        try:
            pod.init_pid = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError):
            pod.phase = "Failed"
            return

    def _stop_pod(self, pod: FakePod) -> None:
        for process in [pod.process, *pod.execs]:
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        if pod.process is not None and pod.process.stderr:
            pod.process.stderr.close()
        if pod.directory is not None:
            shutil.rmtree(pod.directory, ignore_errors=True)

    def delete_pod(self, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pod = self.pods.pop(name, None)
        if pod is None:
            return 404, _status(404, "NotFound", f"pods {name!r} not found")
        self._stop_pod(pod)
        return 200, pod.to_json()

    def list_pods(self, selector: str) -> dict[str, Any]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        with self._lock:
            items = [p.to_json() for p in self.pods.values()
                     if all(p.manifest["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    # -- exec ---------------------------------------------------------------------------------

    def exec_in_pod(self, name: str, command: list[str], connection: _WebSocket, with_stdin: bool) -> None:
        pod = self.pods.get(name)
        if pod is None or not pod.init_pid:
            connection.send_channel(3, json.dumps(_status(404, "NotFound", f"pod {name} is not running")).encode())
            return
        argv = ["nsenter", "--target", str(pod.init_pid), "--user", "--mount", "--pid", "--net", "--ipc", "--uts",
                "--preserve-credentials", "--root", "--wd", "--",
                "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", *command]
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as error:
            connection.send_channel(3, json.dumps(_status(500, "InternalError", str(error))).encode())
            return
        pod.execs.append(process)
        if with_stdin:
            threading.Thread(target=_feed_stdin, args=(connection, process), daemon=True).start()
        with selectors.DefaultSelector() as selector:
            assert process.stdout and process.stderr
            selector.register(process.stdout, selectors.EVENT_READ, 1)
            selector.register(process.stderr, selectors.EVENT_READ, 2)
            while selector.get_map():
                for key, _ in selector.select():
                    data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    if not connection.send_channel(key.data, data):
                        break
        code = process.wait()
        pod.execs.remove(process)
        if code < 0:
            code = 128 - code  # as container runtimes report a signalled process
        connection.send_channel(3, json.dumps(_exit_status(code)).encode())


def _feed_stdin(connection: _WebSocket, process: subprocess.Popen[bytes]) -> None:
    assert process.stdin
    try:
        while True:
            frame = connection.receive()
            if frame is None:
                break
            opcode, payload = frame
            if opcode == _OP_CLOSE:
                break
            if not payload:
                continue
            if payload[0] == 0:
                process.stdin.write(payload[1:])
                process.stdin.flush()
            elif payload[0] == 255 and payload[1:2] == b"\x00":
                break
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class _WebSocket:
    """Server side of one RFC 6455 connection: unmasked frames out, masked frames in."""

    def __init__(self, sock: socket.socket, reader: Any) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._reader = reader

    def send_frame(self, opcode: int, payload: bytes) -> bool:
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([127]) + struct.pack("!Q", len(payload))
        try:
            with self._send_lock:
                self.sock.sendall(header + payload)
            return True
        except OSError:
            return False

    def send_channel(self, channel: int, data: bytes) -> bool:
        return self.send_frame(_OP_BINARY, bytes([channel]) + data)

    def receive(self) -> tuple[int, bytes] | None:
        head = self._reader.read(2)
        if len(head) < 2:
            return None
        opcode, masked, length = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._reader.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._reader.read(8))[0]
        mask = self._reader.read(4) if masked else b"\0\0\0\0"
        payload = bytearray(self._reader.read(length))
        for index in range(len(payload)):
            payload[index] ^= mask[index % 4]
        if opcode == _OP_PING:
            self.send_frame(_OP_PONG, bytes(payload))
        return opcode, bytes(payload)


def _handler_for(api: FakeKubernetesApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            pass

        def _record(self) -> tuple[str, dict[str, list[str]], dict[str, Any] | None]:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with api._lock:
                api.requests.append(RecordedRequest(self.command, parts.path, query, body))
            return parts.path, query, body

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            path, _, body = self._record()
            assert body is not None
            if (match := _PODS.match(path)) and not match["name"]:
                self._reply(*api.create_pod(body))
            elif _POLICIES.match(path):
                name = body["metadata"]["name"]
                with api._lock:
                    exists = name in api.network_policies
                    api.network_policies.setdefault(name, body)
                if exists:
                    self._reply(409, _status(409, "AlreadyExists", f"networkpolicies {name!r} already exists"))
                else:
                    self._reply(201, body)
            else:
                self._reply(404, _status(404, "NotFound", path))

        def do_DELETE(self) -> None:  # noqa: N802
            path, _, _ = self._record()
            match = _PODS.match(path)
            if match and match["name"] and not match["exec"]:
                self._reply(*api.delete_pod(match["name"]))
            else:
                self._reply(404, _status(404, "NotFound", path))

        def do_GET(self) -> None:  # noqa: N802
            path, query, _ = self._record()
            match = _PODS.match(path)
            if not match:
                self._reply(404, _status(404, "NotFound", path))
            elif match["exec"]:
                self._exec(match["name"], query)
            elif match["name"]:
                pod = api.pods.get(match["name"])
                if pod is None:
                    self._reply(404, _status(404, "NotFound", f"pods {match['name']!r} not found"))
                else:
                    self._reply(200, pod.to_json())
            else:
                self._reply(200, api.list_pods(query.get("labelSelector", [""])[0]))

        def _exec(self, name: str, query: dict[str, list[str]]) -> None:
            offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            key = self.headers.get("Sec-WebSocket-Key", "")
            if self.headers.get("Upgrade", "").lower() != "websocket" or not key or api.protocol not in offered:
                self._reply(400, _status(400, "BadRequest", "exec needs a websocket upgrade with a channel protocol"))
                return
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("Sec-WebSocket-Protocol", api.protocol)
            self.end_headers()
            self.wfile.flush()
            connection = _WebSocket(self.connection, self.rfile)
            api.exec_in_pod(name, query.get("command", []), connection,
                            with_stdin=query.get("stdin", ["false"])[0] == "true")
            connection.send_frame(_OP_CLOSE, struct.pack("!H", 1000))
            self.close_connection = True

    return Handler
