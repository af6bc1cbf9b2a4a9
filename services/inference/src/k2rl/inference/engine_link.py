"""Membership of this replica in the checkpoint engine (K2 section 3.3.2).

When ``checkpoint_engine_replica`` is on, the replica registers with the checkpoint engine's
coordinator (``dependencies["checkpoint_engine"]``) as an INFERENCE_REPLICA, giving the
address of its InferenceService and the version it serves, and heartbeats that version.
Engine workers then push every new version into it over ``UpdateWeights``; a replica that
registers with an older version than the latest (a fresh or restarted process) is brought
up to date by the engine alone (its P2P path), without the trainer.

Degrades gracefully: the replica serves whatever weights it holds while the coordinator is
unreachable and keeps retrying with a bounded backoff; a coordinator that forgot it (lease
expired, restart) gets a new registration with the current version.

The shard plan is "the full model": the native engine keeps every parameter on one device,
and its UpdateWeights handler selects every served tensor by name.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class ReplicaIdentity:
    """What the coordinator learns about this replica."""

    instance_name: str
    address: str  # where engine workers dial this replica's InferenceService
    device: str
    labels: dict[str, str]


class EngineLink:
    """Registration + heartbeat thread; ``weight_version`` reads the version served now."""

    def __init__(self, identity: ReplicaIdentity, coordinator: str, options: ClientOptions,
                 weight_version: Callable[[], int], rpc_timeout_s: float = 5.0) -> None:
        self.identity = identity
        self._coordinator_address = coordinator
        self._weight_version = weight_version
        self._rpc_timeout_s = rpc_timeout_s
        self._stub = create_stub(checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub, coordinator, options)
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._worker_id = ""
        self._interval_s = 1.0
        self._server_ready: Callable[[float], bool] = lambda _timeout_s: True
        self._thread = threading.Thread(target=self._loop, name="inference-engine-link", daemon=True)

    @property
    def worker_id(self) -> str:
        """The coordinator's id for this replica ("" until registered)."""
        return self._worker_id

    def start(self, server_ready: Callable[[float], bool]) -> EngineLink:
        """Register once ``server_ready(timeout_s)`` says this replica's gRPC server answers
        (engine workers dial it as soon as it is registered), then heartbeat until ``stop``."""
        self._server_ready = server_ready
        self._thread.start()
        return self

    def wait_registered(self, timeout_s: float) -> bool:
        return self._registered.wait(timeout_s)

    def stop(self) -> None:
        """Deregister (best effort: the lease expires anyway) and stop heartbeating."""
        self._stop.set()
        self._thread.join(timeout=self._rpc_timeout_s + 1)
        if self._worker_id:
            try:
                self._stub.DeregisterWorker(ce.DeregisterWorkerRequest(worker_id=self._worker_id, reason="shutdown"),
                                            timeout=self._rpc_timeout_s)
            except grpc.RpcError as error:
                log.info("deregistration from the checkpoint engine failed: %s", error.code().name)
        close_stub(self._stub)

    def _loop(self) -> None:
        while not self._stop.is_set() and not self._server_ready(1.0):
            self._stop.wait(0.1)
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if not self._worker_id:
                    self._register()
                else:
                    self._heartbeat()
                backoff = 0.2
                wait = self._interval_s
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self._worker_id = ""  # lease expired or coordinator restarted: register again at once
                    continue
                log.warning("checkpoint engine at %s unreachable (%s); serving the current weights, retrying",
                            self._coordinator_address, error.code().name)
                wait, backoff = backoff, min(backoff * 2, _MAX_BACKOFF_S)
            self._stop.wait(wait)

    def _register(self) -> None:
        identity = self.identity
        request = ce.RegisterWorkerRequest(
            kind=ce.WORKER_KIND_INFERENCE_REPLICA, instance_name=identity.instance_name, address=identity.address,
            devices=[ce.Device(node=socket.gethostname(), name=identity.device)], weight_version=self._weight_version(),
            labels=identity.labels)
        response = self._stub.RegisterWorker(request, timeout=self._rpc_timeout_s)
        self._worker_id = response.worker_id
        # Heartbeat at least three times per lease, at most once per 50 ms.
        self._interval_s = max(0.05, min(1.0, response.lease.ttl_ms / 1000 / 3))
        self._registered.set()
        log.info("registered with the checkpoint engine", extra={"fields": {
            "worker_id": self._worker_id, "address": identity.address,
            "weight_version": request.weight_version, "latest_version": response.latest_version.version}})

    def _heartbeat(self) -> None:
        self._stub.Heartbeat(ce.HeartbeatRequest(worker_id=self._worker_id, weight_version=self._weight_version()),
                             timeout=self._rpc_timeout_s)
