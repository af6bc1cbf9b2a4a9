"""Runs inside vLLM's worker processes (``worker_extension_cls``): vLLM mixes this class into
its GPU worker, and ``LLM.collective_rpc(name, args=...)`` calls the method on every worker.

A weight update reaches the workers as metadata only: the arguments are plain values
(ints, strings, bytes of serialised ``k2rl.common.v1`` messages) that any vLLM RPC
serialisation carries without pickling tensors. Each worker opens the checkpoint engine's
IPC buffers itself (``k2rl.weights.WeightReceiver``: POSIX shm on the host, CUDA IPC
handles on the GPU), verifies every bucket's checksum and copies the tensors it selects
out of the slot before the bucket is acknowledged (the engine may then reuse the slot),
into buffers on the worker's own device. Nothing touches the model until ``apply``, which
hands views of those buffers to the model's own ``load_weights`` (vLLM maps fused names
and cuts this worker's tensor-parallel shard from the full tensor).

Outcomes come back as values (``{"error": kind, "message": ...}``), not exceptions:
vLLM re-raises a worker's exception in the caller as a generic error, losing its kind.

Not exercised against a real vLLM here; the tests call it on the declared double worker of
``k2rl.inference.testing.FakeVllm``, whose model offers vLLM's ``load_weights`` contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2
from k2rl.common.v1 import common_pb2
from k2rl.weights import ChecksumMismatch, LayoutError, WeightReceiver
from k2rl.weights import proto as wire

CHECKSUM_MISMATCH = "checksum_mismatch"
LAYOUT_MISMATCH = "layout_mismatch"
IPC_OPEN_FAILED = "ipc_open_failed"
SUPERSEDED = "superseded"
LOAD_FAILED = "load_failed"


@dataclass
class _Update:
    """One update in progress on this worker."""

    update_id: int
    version: int
    bucket_count: int
    receiver: WeightReceiver
    prepared: dict[str, torch.Tensor] = field(default_factory=dict)


def _ok(**values: Any) -> dict[str, Any]:
    return {"error": "", "message": "", **values}


def _failed(kind: str, error: BaseException | str) -> dict[str, Any]:
    return {"error": kind, "message": str(error)}


class K2rlWorkerExtension:
    """Methods the vLLM backend calls on each worker. ``self`` is vLLM's worker: its model is
    ``self.model_runner.model``. Updates are numbered by the caller; a call for another
    update than the one in progress is refused (``superseded``)."""

    _k2rl_update: _Update | None = None

    def _k2rl_model(self) -> Any:
        return self.model_runner.model  # type: ignore[attr-defined]

    def _k2rl_device(self) -> torch.device:
        return next(self._k2rl_model().parameters()).device

    def k2rl_update_begin(self, update_id: int, version: int, bucket_count: int, slots: Sequence[Sequence[Any]],
                          selectors: Sequence[bytes], verify: bool = True) -> dict[str, Any]:
        """Open the IPC slots (``[slot, serialised IpcHandle]`` pairs: a list, since not every
        RPC serialisation keeps int map keys) and prepare to receive ``version``;
        ``selectors`` (serialised ``TensorSelector``) name what this worker takes."""
        self.k2rl_update_abort()
        try:
            handles = {int(slot): wire.descriptor_from_proto(common_pb2.IpcHandle.FromString(handle))
                       for slot, handle in slots}
            chosen = [wire.selector_from_proto(checkpoint_engine_pb2.TensorSelector.FromString(s)) for s in selectors]
        except ValueError as error:
            return _failed(LAYOUT_MISMATCH, error)
        receiver = WeightReceiver(chosen, device=self._k2rl_device())
        try:
            receiver.begin(version, bucket_count, handles, verify=verify)
        except (OSError, ValueError) as error:  # SharedMemoryError is an OSError
            receiver.close()
            return _failed(IPC_OPEN_FAILED, error)
        self._k2rl_update = _Update(update_id, version, bucket_count, receiver)
        return _ok()

    def k2rl_update_bucket(self, update_id: int, bucket: bytes, slot: int, slot_byte_offset: int = 0) -> dict[str, Any]:
        """Verify one bucket (serialised ``WeightBucket``) in its slot and copy out the selected
        tensors; on success the slot may be reused. A failure ends the update here."""
        return self._k2rl_step(update_id, lambda update: _ok(bytes=update.receiver.load_bucket(
            wire.bucket_from_proto(common_pb2.WeightBucket.FromString(bucket)), slot, slot_byte_offset)))

    def k2rl_update_prepare(self, update_id: int) -> dict[str, Any]:
        """Every bucket arrived: check every selected tensor is complete and hold them for
        ``apply`` (the model is still untouched)."""

        def prepare(update: _Update) -> dict[str, Any]:
            update.prepared = update.receiver.commit(update.version, update.bucket_count)
            return _ok(tensors=len(update.prepared))

        return self._k2rl_step(update_id, prepare)

    def k2rl_update_apply(self, update_id: int) -> dict[str, Any]:
        """Load the prepared tensors into the model in place (call between model steps)."""
        update = self._k2rl_update
        if update is None or update.update_id != update_id or not update.prepared:
            return _failed(SUPERSEDED, f"update {update_id} is not prepared on this worker")
        try:
            loaded = self._k2rl_model().load_weights(iter(update.prepared.items()))
            device = self._k2rl_device()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as error:  # the model may now be partly loaded: the caller must not serve it
            return _failed(LOAD_FAILED, f"{type(error).__name__}: {error}")
        finally:
            self.k2rl_update_abort()
        return _ok(loaded=sorted(loaded) if loaded is not None else sorted(update.prepared))

    def k2rl_update_abort(self, update_id: int | None = None) -> None:
        """Drop the update in progress (all of it, or only if it is ``update_id``) and close
        its IPC mappings; what it received is freed."""
        update = self._k2rl_update
        if update is None or (update_id is not None and update.update_id != update_id):
            return
        update.receiver.close()
        update.prepared.clear()
        self._k2rl_update = None

    def _k2rl_step(self, update_id: int, step: Callable[[_Update], dict[str, Any]]) -> dict[str, Any]:
        update = self._k2rl_update
        if update is None or update.update_id != update_id:
            return _failed(SUPERSEDED, f"update {update_id} is not in progress on this worker")
        try:
            return step(update)
        except ChecksumMismatch as error:
            self.k2rl_update_abort()
            return _failed(CHECKSUM_MISMATCH, error)
        except (LayoutError, ValueError) as error:
            self.k2rl_update_abort()
            return _failed(LAYOUT_MISMATCH, error)
