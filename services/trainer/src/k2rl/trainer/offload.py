"""Moving trainer state between the device and host memory (K2 §3.3.2, colocated RL).

Between training phases the trainer hands its GPUs to inference: parameters, optimizer
state and gradients are copied to (pinned) host memory and their device storage is freed;
``onload`` copies them back. The tensors keep their identity -- only ``tensor.data`` is
swapped -- so the optimizer's state keys, tied weights and every reference into the
model stay valid, and the round trip is a pair of plain copies (bit-identical).

On a CPU-only trainer "device" and "host" are the same memory; the same code still moves
the bytes, so the state machine and its preconditions are exercised everywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator

import torch
from torch import nn


class Component(enum.Enum):
    PARAMETERS = "parameters"
    OPTIMIZER_STATE = "optimizer_state"
    GRADIENTS = "gradients"


class Placement(enum.Enum):
    DEVICE = "device"
    HOST = "host"
    NOT_ALLOCATED = "not_allocated"


class OffloadManager:
    """Tracks where each component lives and moves it; one instance per rank."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self._host: dict[Component, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # -- what belongs to each component ---------------------------------------------------

    def _tensors(self, component: Component) -> Iterator[torch.Tensor]:
        if component is Component.PARAMETERS:
            yield from self.model.parameters()  # de-duplicates tied weights
            yield from self.model.buffers()
        elif component is Component.OPTIMIZER_STATE:
            for state in self.optimizer.state.values():
                yield from (v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
        else:
            yield from (p.grad for p in self.model.parameters() if p.grad is not None)

    def placement(self, component: Component) -> Placement:
        if component in self._host:
            return Placement.HOST
        if component is Component.GRADIENTS and not any(True for _ in self._tensors(component)):
            return Placement.NOT_ALLOCATED
        return Placement.DEVICE

    def nbytes(self, component: Component) -> int:
        if component in self._host:
            return sum(h.numel() * h.element_size() for _, h in self._host[component])
        return sum(t.numel() * t.element_size() for t in self._tensors(component))

    def is_offloaded(self, component: Component) -> bool:
        return component in self._host

    def host_pinned_bytes(self) -> int:
        return sum(
            h.numel() * h.element_size() for pairs in self._host.values() for _, h in pairs if h.is_pinned()
        )

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The host copy of an offloaded tensor (by identity), for reads while offloaded."""
        for pairs in self._host.values():
            for live, host in pairs:
                if live is tensor:
                    return host
        return None

    # -- moves ----------------------------------------------------------------------------

    @torch.no_grad()
    def offload(self, components: Iterable[Component]) -> int:
        """Copy the components to host memory and free their device storage; bytes moved."""
        pin = torch.cuda.is_available()
        moved = 0
        for component in components:
            if component in self._host:
                continue
            pairs = []
            for tensor in self._tensors(component):
                host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
                host.copy_(tensor, non_blocking=pin)
                pairs.append((tensor, host))
            if pin:
                torch.cuda.synchronize(self.device)
            for tensor, _ in pairs:
                tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
            moved += sum(h.numel() * h.element_size() for _, h in pairs)
            self._host[component] = pairs
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return moved

    @torch.no_grad()
    def onload(self, components: Iterable[Component]) -> int:
        """Copy offloaded components back to the device (H2D); bytes moved."""
        moved = 0
        for component in components:
            pairs = self._host.pop(component, None)
            if pairs is None:
                continue
            for tensor, host in pairs:
                tensor.data = host.to(self.device, non_blocking=True)
                moved += host.numel() * host.element_size()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return moved
