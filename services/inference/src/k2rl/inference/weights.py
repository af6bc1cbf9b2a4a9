"""Staging a new weight version next to the one being served.

An update arrives as named tensors (or pieces of them: a tensor larger than a bucket comes
in several slices). Each is copied into a staged buffer with the served parameter's
shape, dtype and device, while the engine keeps sampling from the current weights. Only
when every parameter is covered does the engine swap the staged buffers in, between two
scheduler steps, by replacing each parameter's storage (``param.data = staged``): an
O(number of parameters) pointer swap, so no step ever sees a mix of versions. The cost is
one extra copy of the weights in memory while an update is staged.

With a ``StandbyWeights`` (double buffering) that copy is kept between updates: the staged
buffers are the standby set, written in place every version, and the swap hands the
previously served storage back as the next standby set. No update allocates after the
first one; on the host that matters, since writing fresh pages is several times slower than
writing touched ones. The price is one extra copy of the weights held at all times.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from k2rl.models import CausalLM


class WeightUpdateOutcome(enum.Enum):
    APPLIED = "applied"
    ALREADY_CURRENT = "already_current"
    STALE_VERSION = "stale_version"
    LAYOUT_MISMATCH = "layout_mismatch"
    BUSY = "busy"
    TRANSFER_FAILED = "transfer_failed"


def unnecessary_update(version: int, *, served_version: int, has_weights: bool) -> WeightUpdateOutcome | None:
    """Why an update to ``version`` needs no staging (ALREADY_CURRENT / STALE_VERSION), or None.

    One rule for every backend: re-sending the served version is a no-op, an older one is refused.
    """
    if has_weights and version == served_version:
        return WeightUpdateOutcome.ALREADY_CURRENT
    if version < served_version:
        return WeightUpdateOutcome.STALE_VERSION
    return None


class InFlightPolicy(enum.Enum):
    """What a weight swap does with requests that are running (proto ``InFlightPolicy``).

    REFUSE: the update is refused (BUSY) if any request is queued or running.
    PAUSE:  running requests are preempted at the swap and recomputed under the new
            weights (their KV cache was computed by the old ones); tokens sampled after
            the swap carry the new version, so each sample records exactly which version
            produced which span. No request ever finishes on the old version after the swap.
    ABORT:  running requests end with finish reason ABORT before the swap.
    """

    REFUSE = "refuse"
    PAUSE = "pause"
    ABORT = "abort"


class LayoutMismatch(ValueError):
    """A tensor's name or shape does not match the served model."""


def served_tensors(model: CausalLM) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers by HF name; a tied ``lm_head.weight`` is left out."""
    state = dict(model.named_parameters())
    state.update({name: buf for name, buf in model.named_buffers() if name in model.state_dict()})
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def _fits(tensors: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> bool:
    return tensors.keys() == targets.keys() and all(
        tensor.shape == targets[name].shape and tensor.dtype == targets[name].dtype
        and tensor.device == targets[name].device and tensor.is_contiguous()
        for name, tensor in tensors.items()
    )


class StandbyWeights:
    """The parameter set an update is written into while the other one is served.

    Lent to one ``WeightStager`` at a time (a concurrent update stages into fresh tensors
    instead); the stager that commits returns the storage it replaced, so the two sets
    alternate. Its contents are scratch: a failed update leaves it partly written, and a
    stager only swaps once every tensor is covered again, so nothing stale is ever served.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] | None = None
        self._holder: object | None = None
        self._lock = threading.Lock()

    def lend(self, targets: Mapping[str, torch.Tensor], holder: object) -> dict[str, torch.Tensor]:
        """Tensors like ``targets`` (allocated on first use or when the layout changed), or
        ``{}`` while another holder has them."""
        with self._lock:
            if self._holder is not None:
                return {}
            if self._tensors is None or not _fits(self._tensors, targets):
                self._tensors = {
                    name: torch.empty_like(target, memory_format=torch.contiguous_format)
                    for name, target in targets.items()
                }
            self._holder = holder
            return self._tensors

    def give_back(self, holder: object, replaced: dict[str, torch.Tensor] | None = None) -> None:
        """End ``holder``'s loan; ``replaced`` (the storage a swap took out of service)
        becomes the standby set. A no-op for anyone but the holder."""
        with self._lock:
            if self._holder is not holder:
                return
            self._holder = None
            if replaced is not None:
                self._tensors = replaced

    def drop(self) -> int:
        """Free the set (sleep); returns its bytes. Reallocated by the next update."""
        with self._lock:
            freed = self.nbytes
            self._tensors = None
            return freed

    @property
    def nbytes(self) -> int:
        tensors = self._tensors or {}
        return sum(t.numel() * t.element_size() for t in tensors.values() if t.device.type != "meta")


@dataclass
class _Staged:
    buffer: torch.Tensor
    covered: int = 0  # elements received


class WeightStager:
    """Receives the tensors of one version; ``complete`` once every parameter is covered."""

    def __init__(self, model: CausalLM, version: int, standby: StandbyWeights | None = None) -> None:
        self.version = version
        self._targets = served_tensors(model)
        self._tied = model.config.tie_word_embeddings
        self._staged: dict[str, _Staged] = {}
        self._standby = standby
        self.destinations = standby.lend(self._targets, self) if standby is not None else {}
        self.bytes_loaded = 0

    def load(self, name: str, tensor: torch.Tensor, element_offset: int = 0, *, adopt: bool = False) -> None:
        """Copy ``tensor`` (a whole parameter, or a flat slice starting at ``element_offset``).

        ``adopt=True`` takes a whole tensor that already has the parameter's dtype, device and
        layout without copying; only for tensors nobody else will modify (a receiver's copies).
        """
        if self._tied and name == "lm_head.weight":
            return  # the embedding carries it
        target = self._targets.get(name)
        if target is None:
            raise LayoutMismatch(f"{name} is not a parameter of the served model")
        whole = element_offset == 0 and tuple(tensor.shape) == tuple(target.shape)
        if not whole and element_offset + tensor.numel() > target.numel():
            raise LayoutMismatch(
                f"{name}: slice [{element_offset}, {element_offset + tensor.numel()}) exceeds "
                f"{tuple(target.shape)} ({target.numel()} elements)"
            )
        if not tensor.is_floating_point() and target.is_floating_point():
            raise LayoutMismatch(f"{name}: got dtype {tensor.dtype}, the model holds {target.dtype}")
        device = target.device
        if adopt and whole and tensor.dtype == target.dtype and tensor.device == device and tensor.is_contiguous():
            self._staged[name] = _Staged(tensor, tensor.numel())
            self.bytes_loaded += tensor.numel() * tensor.element_size()
            return
        staged = self._staged.get(name)
        if staged is None:
            buffer = self.destinations.get(name)
            if buffer is None:
                buffer = torch.empty_like(target, memory_format=torch.contiguous_format, device=device)
            staged = self._staged[name] = _Staged(buffer)
        flat = staged.buffer.view(-1)
        flat[element_offset : element_offset + tensor.numel()].copy_(tensor.reshape(-1))
        staged.covered += tensor.numel()
        self.bytes_loaded += tensor.numel() * tensor.element_size()

    def load_all(self, tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        items = tensors.items() if isinstance(tensors, Mapping) else tensors
        for name, tensor in items:
            self.load(name, tensor)

    def missing(self) -> list[str]:
        return [
            name
            for name, target in self._targets.items()
            if name not in self._staged or self._staged[name].covered < target.numel()
        ]

    @property
    def complete(self) -> bool:
        return not self.missing()

    def swap_into(self, model: CausalLM) -> None:
        """Install the staged tensors (caller guarantees no forward runs concurrently); the
        storage they replace becomes the standby set."""
        missing = self.missing()
        if missing:
            raise LayoutMismatch(f"{len(missing)} parameters not covered, e.g. {missing[:3]}")
        targets = served_tensors(model)
        replaced = {}
        for name, staged in self._staged.items():
            replaced[name] = targets[name].data
            targets[name].data = staged.buffer
        self._staged.clear()
        if self._standby is not None:
            self._standby.give_back(self, replaced)

    def close(self) -> None:
        """Give the standby set back unused (the update failed or was refused); idempotent."""
        if self._standby is not None:
            self._standby.give_back(self)
