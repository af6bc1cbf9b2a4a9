"""Toy attention models honouring the ``k2rl.models`` attention contract, for optimizer tests.

They are small, deterministic and expose :meth:`head_logits` (the full pre-softmax logits per
head), which lets tests check QK-Clip against the logits themselves. The layouts are the HF
ones (MLA: ``q_b_proj`` rows per head ``[nope | rope]``, ``kv_b_proj`` rows ``[k_nope | v]``,
``kv_a_proj_with_mqa`` rows ``[latent | shared k_rope]``). Rotary rotation is left out: it is an
orthogonal map per position, so it changes no clipping math. Also home of the worker of the
2-process ZeRO-1 test (a spawned child must be able to import it by name).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ToyGQAttention",
    "ToyMLAttention",
    "ToyModel",
    "free_loopback_port",
    "run_zero1_equivalence",
]


def _causal_mask(length: int, device: torch.device) -> Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class _Tracker(nn.Module):
    num_heads: int

    def __init__(self) -> None:
        super().__init__()
        self.track_max_logits = False
        self.max_logits: Tensor | None = None

    def reset_max_logits(self) -> None:
        self.max_logits = None

    def head_logits(self, x: Tensor) -> Tensor:  # [B, H, T, T], masked entries -inf
        raise NotImplementedError

    def _attend(self, x: Tensor, values: Tensor) -> Tensor:
        logits = self.head_logits(x)
        if self.track_max_logits:
            head_max = logits.detach().amax(dim=(0, 2, 3)).float()
            self.max_logits = (
                head_max if self.max_logits is None else torch.maximum(self.max_logits, head_max)
            )
        probs = torch.softmax(logits, dim=-1)
        return probs @ values  # [B, H, T, Dv]


class ToyMLAttention(_Tracker):
    def __init__(
        self,
        hidden: int,
        num_heads: int,
        *,
        q_lora_rank: int | None = 16,
        kv_lora_rank: int = 16,
        qk_nope_head_dim: int = 8,
        qk_rope_head_dim: int = 4,
        v_head_dim: int = 8,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_lora_rank = q_lora_rank
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        q_dim = num_heads * (qk_nope_head_dim + qk_rope_head_dim)
        if q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, q_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, q_lora_rank, bias=False)
            self.q_a_layernorm = nn.RMSNorm(q_lora_rank)
            self.q_b_proj = nn.Linear(q_lora_rank, q_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, kv_lora_rank + qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(kv_lora_rank)
        self.kv_b_proj = nn.Linear(
            kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(num_heads * v_head_dim, hidden, bias=False)
        self.softmax_scale = (qk_nope_head_dim + qk_rope_head_dim) ** -0.5

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        h, dn, dr, dv = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
        )
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q_nope, q_rope = q.view(b, t, h, dn + dr).transpose(1, 2).split([dn, dr], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, dr], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent)).view(b, t, h, dn + dv).transpose(1, 2)
        k_nope, v = kv.split([dn, dv], dim=-1)
        return q_nope, q_rope, k_nope, k_rope[:, None], v

    def head_logits(self, x: Tensor) -> Tensor:
        q_nope, q_rope, k_nope, k_rope, _ = self._qkv(x)
        logits = (q_nope @ k_nope.mT + q_rope @ k_rope.mT) * self.softmax_scale
        return logits.masked_fill(~_causal_mask(x.shape[1], x.device), float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        v = self._qkv(x)[4]
        out = self._attend(x, v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class ToyGQAttention(_Tracker):
    def __init__(
        self,
        hidden: int,
        num_heads: int,
        num_key_value_heads: int,
        head_dim: int = 8,
        *,
        bias: bool = False,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(hidden, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, num_key_value_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, num_key_value_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden, bias=False)
        if qk_norm:
            self.q_norm = nn.RMSNorm(head_dim)
            self.k_norm = nn.RMSNorm(head_dim)
        self.softmax_scale = head_dim**-0.5

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.num_key_value_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.num_key_value_heads, self.head_dim)
        if getattr(self, "q_norm", None) is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        group = self.num_heads // self.num_key_value_heads
        k = k.repeat_interleave(group, dim=2)  # HF repeat_kv: head h reads kv head h // group
        v = v.repeat_interleave(group, dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def head_logits(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        logits = (q @ k.mT) * self.softmax_scale
        return logits.masked_fill(~_causal_mask(x.shape[1], x.device), float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        out = self._attend(x, self._qkv(x)[2])
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class _Expert(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _Gate(nn.Module):
    def __init__(self, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_experts, hidden) * hidden**-0.5)
        # A Parameter here (HF stores a buffer) so the test sees it routed to AdamW, not Muon.
        self.e_score_correction_bias = nn.Parameter(torch.zeros(num_experts))


class _MoE(nn.Module):
    """Top-1 sigmoid router over HF-named experts (unchosen experts get no gradient)."""

    def __init__(self, hidden: int, inter: int, num_experts: int) -> None:
        super().__init__()
        self.gate = _Gate(hidden, num_experts)
        self.experts = nn.ModuleList(_Expert(hidden, inter) for _ in range(num_experts))

    def forward(self, x: Tensor) -> Tensor:
        scores = torch.sigmoid(x @ self.gate.weight.T)
        choice = (scores + self.gate.e_score_correction_bias).argmax(dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            sel = choice == e
            if sel.any():
                out[sel] = expert(x[sel]) * scores[sel][:, e : e + 1]
        return out


class _StackedExperts(nn.Module):
    """Experts stored as 3-D ``[E, out, in]`` stacks (dense mixture; every expert gets grads)."""

    def __init__(self, hidden: int, inter: int, num_experts: int) -> None:
        super().__init__()
        self.gate = _Gate(hidden, num_experts)
        self.experts = nn.Module()
        self.experts.gate_proj = nn.Parameter(
            torch.randn(num_experts, inter, hidden) * hidden**-0.5
        )
        self.experts.down_proj = nn.Parameter(torch.randn(num_experts, hidden, inter) * inter**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(x @ self.gate.weight.T, dim=-1)  # [..., E]
        h = F.silu(torch.einsum("...d,eid->...ei", x, self.experts.gate_proj))
        y = torch.einsum("...ei,edi->...ed", h, self.experts.down_proj)
        return (y * weights[..., None]).sum(dim=-2)


class _Layer(nn.Module):
    def __init__(self, attn: nn.Module, mlp: nn.Module, hidden: int) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(hidden)
        self.self_attn = attn
        self.post_attention_layernorm = nn.RMSNorm(hidden)
        self.mlp = mlp

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class ToyModel(nn.Module):
    """Embedding -> [MLA + MoE, MLA(q_proj) + stacked experts, GQA (+bias)] -> norm -> lm_head."""

    def __init__(
        self, vocab: int = 64, hidden: int = 32, *, qk_norm: bool = False, seed: int = 0
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            [
                _Layer(ToyMLAttention(hidden, 4), _MoE(hidden, 24, 4), hidden),
                _Layer(
                    ToyMLAttention(hidden, 2, q_lora_rank=None),
                    _StackedExperts(hidden, 24, 3),
                    hidden,
                ),
                _Layer(
                    ToyGQAttention(hidden, 4, 2, bias=True, qk_norm=qk_norm),
                    _Expert(hidden, 48),
                    hidden,
                ),
            ]
        )
        self.norm = nn.RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: Tensor) -> Tensor:
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))

    def loss(self, input_ids: Tensor) -> Tensor:
        logits = self(input_ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))

    def attention_modules(self) -> list[tuple[int, nn.Module]]:
        return [(i, layer.self_attn) for i, layer in enumerate(self.layers)]

    def set_track_max_logits(self, enabled: bool) -> None:
        for _, attn in self.attention_modules():
            attn.track_max_logits = enabled

    def reset_max_logits(self) -> None:
        for _, attn in self.attention_modules():
            attn.reset_max_logits()


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ 2-process ZeRO-1 check
def _zero1_batches(rank: int, step: int) -> Tensor:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randint(0, 64, (2, 12), generator=g)


def _make_optimizer(model: ToyModel, **kwargs: object):  # noqa: ANN202
    from k2rl.optim.muonclip import MuonClip

    # High lr and a low tau so QK-Clip fires in the first steps and later steps start from
    # clipped weights (the ZeRO-1 master-copy bug class).
    return MuonClip.from_model(
        model, lr=0.05, weight_decay=0.1, qk_clip_tau=0.5, nesterov=True, **kwargs
    )


def _all_reduce_mean_grads(model: nn.Module, world_size: int) -> None:
    """What a DDP-style trainer does before ``step()`` with ``grad_sync="none"``: mean of the
    gradients, zeros where a rank had none, ``None`` where no rank had one."""
    import torch.distributed as dist

    params = list(model.parameters())
    present = torch.tensor([float(p.grad is not None) for p in params])
    dist.all_reduce(present)
    for p, count in zip(params, present.tolist(), strict=True):
        if count == 0:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(grad)
        p.grad = grad.div_(world_size)


def _zero1_worker(rank: int, world_size: int, port: int, out_dir: str, steps: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {}
        for grad_sync in ("reduce", "none"):
            model = ToyModel(seed=0)
            opt = _make_optimizer(model, data_parallel=True, grad_sync=grad_sync)
            for step in range(steps):
                model.loss(_zero1_batches(rank, step)).backward()
                if grad_sync == "none":
                    _all_reduce_mean_grads(model, world_size)
                opt.step()
                opt.zero_grad(set_to_none=True)
            owned = {id(p) for p in opt.owned_params()}
            results[grad_sync] = {
                "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "owned_names": [n for n, p in model.named_parameters() if id(p) in owned],
                "state_only_owned": all(id(p) in owned for p in opt.state),
                "num_state": len(opt.state),
                "stats": opt.last_qk_clip_stats,
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def reference_zero1_run(world_size: int, steps: int) -> dict[str, object]:
    """Single-process MuonClip on the DP-mean gradients and the cross-rank max logits.

    Runs single-threaded like the workers, so both sides use the same kernels.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference_zero1_run(world_size, steps)
    finally:
        torch.set_num_threads(threads)


def _reference_zero1_run(world_size: int, steps: int) -> dict[str, object]:
    model = ToyModel(seed=0)
    opt = _make_optimizer(model)
    params = [p for _, p in model.named_parameters()]
    clipped_steps = 0
    for step in range(steps):
        grads: list[list[Tensor | None]] = []
        for rank in range(world_size):  # one forward per rank's batch; S_max accumulates
            model.loss(_zero1_batches(rank, step)).backward()
            grads.append([None if p.grad is None else p.grad.clone() for p in params])
            model.zero_grad(set_to_none=True)
        for i, p in enumerate(params):
            present = [g[i] for g in grads if g[i] is not None]
            if present:  # same arithmetic as the reduce: zeros for absent, sum, / world
                total = torch.zeros_like(p)
                for g in grads:
                    if g[i] is not None:
                        total = total + g[i]
                p.grad = total.div_(world_size)
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert opt.last_qk_clip_stats is not None
        clipped_steps += opt.last_qk_clip_stats.num_clipped > 0
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "stats": opt.last_qk_clip_stats,
        "clipped_steps": clipped_steps,
    }


def run_zero1_equivalence(world_size: int = 2, steps: int = 3) -> tuple[list[dict], dict]:
    """Spawn ``world_size`` gloo ranks training :class:`ToyModel` with ZeRO-1 MuonClip.

    Returns, per rank, ``{grad_sync: result}`` for both gradient paths (the optimizer reduces
    local gradients to owners / the caller all-reduced them), and the single-process reference
    (computed in this process).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(
            _zero1_worker,
            args=(world_size, free_loopback_port(), out_dir, steps),
            nprocs=world_size,
            join=True,
        )
        ranks = [
            torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(world_size)
        ]
    return ranks, reference_zero1_run(world_size, steps)
