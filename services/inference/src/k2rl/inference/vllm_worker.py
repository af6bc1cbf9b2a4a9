"""Runs inside vLLM's worker processes (``worker_extension_cls``): vLLM mixes this class into
its GPU worker, and ``LLM.collective_rpc(name, args=...)`` calls the method on every worker.

Not exercised against a real vLLM here; the tests call it on the declared double worker of
``k2rl.inference.testing.FakeVllm``, whose model offers vLLM's ``load_weights`` contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class K2rlWorkerExtension:
    """Methods the vLLM backend calls on each worker. ``self`` is vLLM's worker: its model is
    ``self.model_runner.model``."""

    def k2rl_load_weights(self, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
        """Load a complete weight version (full HF-named tensors) in place. vLLM's
        ``load_weights`` maps names (fused q/kv/gate-up, experts) and cuts this worker's
        tensor-parallel shard; returns the parameter names it loaded."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        loaded = model.load_weights((name, tensor.to(device, non_blocking=True)) for name, tensor in named_tensors)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return sorted(loaded) if loaded is not None else [name for name, _ in named_tensors]
