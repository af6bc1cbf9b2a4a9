"""The services one RL iteration drives, as typed gRPC stubs (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.inference.v1 import inference_pb2_grpc
from k2rl.judge.v1 import judge_pb2_grpc
from k2rl.sandbox.v1 import sandbox_pb2_grpc
from k2rl.trainer.v1 import trainer_pb2_grpc


def replica_name(index: int) -> str:
    """Dependency name of inference replica ``index``: inference, inference-1, inference-2, ..."""
    return "inference" if index == 0 else f"inference-{index}"


def with_replicas(dependencies: dict[str, str], replicas: list[str]) -> dict[str, str]:
    """``dependencies`` with its inference* entries replaced by ``replicas`` (addresses)."""
    if len(set(replicas)) != len(replicas):
        raise ValueError(f"inference replica addresses must be distinct, got {replicas}")
    others = {k: v for k, v in dependencies.items() if not k.startswith("inference")}
    return {**others, **{replica_name(i): address for i, address in enumerate(replicas)}}


@dataclass(frozen=True)
class ServiceClients:
    """Stubs to trainer, every inference replica, checkpoint engine, and (optional) judge/sandbox."""

    replicas: list[tuple[str, Any]]
    trainer: Any
    checkpoint_engine: Any
    judge: Any = None
    sandbox: Any = None

    @classmethod
    def connect(cls, dependencies: dict[str, str], stub: Callable[[Callable[..., Any], str], Any]) -> ServiceClients:
        """Stubs for ``dependencies`` (name -> address); every name starting with "inference"
        is a replica. ``stub(stub_type, address)`` creates one (auth, TLS, tracing)."""
        replicas = [(name, stub(inference_pb2_grpc.InferenceServiceStub, address))
                    for name, address in sorted(dependencies.items()) if name.startswith("inference")]
        if not replicas:
            raise ValueError("no inference replica configured (dependencies named inference, inference-1, ...)")
        for required in ("trainer", "checkpoint_engine"):
            if required not in dependencies:
                raise ValueError(f"no address configured for {required}")
        optional = {name: dependencies.get(name) for name in ("judge", "sandbox")}
        return cls(
            replicas=replicas,
            trainer=stub(trainer_pb2_grpc.TrainerServiceStub, dependencies["trainer"]),
            checkpoint_engine=stub(checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub,
                                   dependencies["checkpoint_engine"]),
            judge=stub(judge_pb2_grpc.JudgeServiceStub, optional["judge"]) if optional["judge"] else None,
            sandbox=stub(sandbox_pb2_grpc.SandboxServiceStub, optional["sandbox"]) if optional["sandbox"] else None,
        )
