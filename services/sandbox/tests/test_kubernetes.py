"""The Kubernetes runtime against FakeKubernetesApi: the exact requests the official client
sends (pod spec, NetworkPolicy, exec, delete, garbage collection) and sessions on pods."""

from __future__ import annotations

import time
from pathlib import PurePosixPath

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.errors import FailedPrecondition
from k2rl.core.testing import require_binary
from k2rl.sandbox.model import Limits, Status
from k2rl.sandbox.pods import (
    NETWORK_POLICY_NAME,
    OWNER_LABEL,
    SESSION_LABEL,
    PodApi,
    PodConfig,
    PodManager,
    pod_manifest,
)
from k2rl.sandbox.sessions import SessionStore
from k2rl.sandbox.testing import FakeKubernetesApi
from k2rl.sandbox.v1 import sandbox_pb2 as pb
from k2rl.sandbox.v1 import sandbox_pb2_grpc

S = pb.ExecutionStatus
NAMESPACE = "k2rl-test"
LIMITS = Limits(wall_time_ms=5_000, cpu_time_ms=5_000, memory_bytes=256 * 1024**2, max_processes=64,
                max_output_bytes=1 << 20, max_file_size_bytes=1 << 20)
PODS = rf"^/api/v1/namespaces/{NAMESPACE}/pods"


@pytest.fixture
def fake_k8s():
    require_binary("bwrap", "bubblewrap")
    require_binary("nsenter", "util-linux")
    with FakeKubernetesApi(NAMESPACE) as api:
        yield api


def _manager(api: FakeKubernetesApi, **config: object) -> PodManager:
    return PodManager(PodApi(NAMESPACE, api.url), PodConfig(NAMESPACE, "replica-0", **config))


def _exec_commands(api: FakeKubernetesApi) -> list[list[str]]:
    return [r.query["command"] for r in api.requests_to("GET", PODS + r"/[^/]+/exec$")]


def test_sessions_on_pods_over_grpc(fake_k8s, start_sandbox) -> None:
    fake_k8s.add_pod(pod_manifest("k2rl-sbx-orphan", "orphan", "img", LIMITS, {}, PodConfig(NAMESPACE, "replica-0")))
    fake_k8s.add_pod(pod_manifest("k2rl-sbx-other", "other", "img", LIMITS, {}, PodConfig(NAMESPACE, "replica-1")))
    server = start_sandbox(K2RL_K8S_NAMESPACE=NAMESPACE, K2RL_K8S_API_URL=fake_k8s.url,
                           K2RL_K8S_INSTANCE_ID="replica-0")
    server.wait_serving()
    # Start-up: the NetworkPolicy exists and the crashed predecessor's pod is gone, no other's.
    policy = fake_k8s.requests_to("POST", rf"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies$")
    assert policy[0].body["metadata"]["name"] == NETWORK_POLICY_NAME
    assert policy[0].body["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "k2rl-sandbox"}},
                                      "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    listed = fake_k8s.requests_to("GET", PODS + "$")[0]
    assert listed.query["labelSelector"] == ["app.kubernetes.io/managed-by=k2rl-sandbox,k2rl.io/sandbox-owner=replica-0"]
    assert set(fake_k8s.pods) == {"k2rl-sbx-other"}

    stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, server.address, ClientOptions())
    created = stub.CreateSession(pb.CreateSessionRequest(
        image="python:3.12", limits=pb.ResourceLimits(memory_bytes=256 * 1024**2, wall_time_ms=3_000),
        labels={"run": "r1"}, files={"data/in.txt": b"21"}), timeout=30)
    sid, name = created.session_id, f"k2rl-sbx-{created.session_id}"
    assert created.workdir == "/workspace"
    body = fake_k8s.requests_to("POST", PODS + "$")[0].body
    spec, container = body["spec"], body["spec"]["containers"][0]
    assert body["metadata"]["name"] == name
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "k2rl-sandbox", OWNER_LABEL: "replica-0",
                                          SESSION_LABEL: sid}
    assert body["metadata"]["annotations"] == {"k2rl.io/session-labels": '{"run": "r1"}'}
    assert container["image"] == "python:3.12"
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": str(256 * 1024**2)},
                                      "limits": {"cpu": "1", "memory": str(256 * 1024**2),
                                                 "ephemeral-storage": "2Gi"}}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65534
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True, "runAsUser": 65534,
        "runAsGroup": 65534, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["activeDeadlineSeconds"] == 86_400 and spec["restartPolicy"] == "Never"

    run = stub.Execute(pb.ExecuteRequest(
        language=pb.LANGUAGE_PYTHON, session_id=sid, stdin=b"2",
        code="import os, sys\nprint(int(open('data/in.txt').read()) * int(sys.stdin.read()), os.getuid())"),
        timeout=30)
    assert (run.status, run.run.stdout) == (S.EXECUTION_STATUS_OK, b"42 65534\n")
    program = _exec_commands(fake_k8s)[-1]
    assert program[:2] == ["sh", "-c"] and "ulimit -v 262144" in program[2] and program[-2:] == ["python3",
                                                                                                  "solution.py"]
    exec_request = fake_k8s.requests_to("GET", PODS + r"/[^/]+/exec$")[-1]
    assert exec_request.path == f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/exec"
    assert {k: exec_request.query[k] for k in ("container", "stdin", "stdout", "stderr", "tty")} == {
        "container": ["sandbox"], "stdin": ["true"], "stdout": ["true"], "stderr": ["true"], "tty": ["false"]}

    stub.WriteFile(pb.WriteFileRequest(session_id=sid, path="out/notes.txt", content=b"hello pod"), timeout=30)
    read = stub.ReadFile(pb.ReadFileRequest(session_id=sid, path="out/notes.txt", offset=6, max_bytes=2), timeout=30)
    assert (read.content, read.file_size, read.truncated) == (b"po", 9, True)
    with pytest.raises(grpc.RpcError) as missing:
        stub.ReadFile(pb.ReadFileRequest(session_id=sid, path="nope.txt"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # Past the wall limit: TIMEOUT, and everything in the pod but pid 1 is killed by a second exec.
    slow = stub.Execute(pb.ExecuteRequest(language=pb.LANGUAGE_BASH, session_id=sid,
                                          code="sleep 60 & sleep 60", limits=pb.ResourceLimits(wall_time_ms=1_000)),
                        timeout=30)
    assert slow.status == S.EXECUTION_STATUS_TIMEOUT
    assert _exec_commands(fake_k8s)[-1] == ["sh", "-c", "kill -KILL -1 2>/dev/null; exit 0"]
    after = stub.Execute(pb.ExecuteRequest(language=pb.LANGUAGE_BASH, session_id=sid,
                                           code="ps -eo stat=,args= | grep -v '^Z' | grep -c '[s]leep 60' || true"),
                         timeout=30)
    assert (after.status, after.run.stdout) == (S.EXECUTION_STATUS_OK, b"0\n")  # killed sleeps are only zombies

    closed = stub.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
    assert closed.executions == 3
    deleted = fake_k8s.requests_to("DELETE", PODS + "/" + name + "$")
    assert len(deleted) == 1 and deleted[0].query["gracePeriodSeconds"] == ["0"]
    assert name not in fake_k8s.pods
    close_stub(stub)


def test_an_image_that_cannot_be_pulled_fails_the_session_and_leaves_no_pod(fake_k8s) -> None:
    fake_k8s.unpullable_images = ("no/such:image",)
    manager = _manager(fake_k8s)
    with pytest.raises(FailedPrecondition, match="ErrImagePull"):
        manager.create("s1", "no/such:image", LIMITS, {})
    assert fake_k8s.requests_to("DELETE", PODS + "/k2rl-sbx-s1$") and not fake_k8s.pods


def test_a_refused_pod_is_a_failed_precondition_and_orphans_are_collected(fake_k8s, tmp_path) -> None:
    store = SessionStore(tmp_path, 4, 60.0, 600.0, None, reap_interval_s=3600, pods=_manager(fake_k8s))
    try:
        live = store.create(LIMITS, {}, 0, {}, image="busybox")
        with pytest.raises(FailedPrecondition, match="409"):  # the name is taken: the API server says no
            store.pods.create(live.session_id, "busybox", LIMITS, {})
        assert f"k2rl-sbx-{live.session_id}" in fake_k8s.pods  # the refused create deleted nothing
        fake_k8s.add_pod(pod_manifest("k2rl-sbx-lost", "lost", "img", LIMITS, {}, PodConfig(NAMESPACE, "replica-0")))
        assert store.collect_pods() == ["k2rl-sbx-lost"]
        assert set(fake_k8s.pods) == {f"k2rl-sbx-{live.session_id}"}
    finally:
        store.shutdown()
    assert not fake_k8s.pods


def test_idle_pod_sessions_are_deleted_and_output_is_capped(fake_k8s, tmp_path) -> None:
    store = SessionStore(tmp_path, 4, 60.0, 600.0, None, reap_interval_s=3600, pods=_manager(fake_k8s),
                         sessions_on_pods=False)
    try:
        session = store.create(LIMITS, {"a.txt": b"x"}, 100, {}, image="busybox")
        small = Limits(**{**LIMITS.__dict__, "max_output_bytes": 1000})
        flood = session.runtime.run(["bash", "-c", "yes"], None, small)
        assert flood.status is Status.OUTPUT_LIMIT and len(flood.stdout) == 1000 and flood.stdout_truncated
        assert session.workdir.read(PurePosixPath("a.txt"), 0, 10, field="path") == (b"x", 1)
        assert store.expire_idle(now=time.monotonic() + 1) == [session.session_id]
        assert not fake_k8s.pods
    finally:
        store.shutdown()


def test_stdin_needs_the_v5_channel_protocol(tmp_path) -> None:
    require_binary("bwrap", "bubblewrap")
    with FakeKubernetesApi(NAMESPACE, protocol="v4.channel.k8s.io") as fake:
        sandbox = _manager(fake).create("s2", "busybox", LIMITS, {})
        assert sandbox.run(["true"], None, LIMITS).status is Status.OK
        refused = sandbox.run(["cat"], None, LIMITS, stdin=b"data")
        assert refused.status is Status.SANDBOX_ERROR and "v5.channel.k8s.io" in refused.error
