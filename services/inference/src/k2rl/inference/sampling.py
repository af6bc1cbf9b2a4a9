"""Per-request sampling options, validated once when a request is admitted.

Mirrors ``k2rl.common.v1.SamplingParams`` (itself shaped like vLLM's ``SamplingParams``) so
the servicer, the OpenAI API and the vLLM backend all convert into the same type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from k2rl.core.errors import InvalidArgument


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample one request.

    ``temperature == 0`` is greedy. ``seed`` makes sampling reproducible: sample ``i`` of the
    request draws from its own generator seeded with ``seed + i``, so the n samples differ
    from each other and do not depend on what else is in the batch. ``max_tokens`` counts a
    resumed output prefix (proto semantics); 0 = up to the context length.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    max_tokens: int = 0
    min_tokens: int = 0
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:  # also rejects NaN
            raise InvalidArgument(f"temperature must be >= 0, got {self.temperature}", field="sampling_params.temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidArgument(f"top_p must be in (0, 1], got {self.top_p}", field="sampling_params.top_p")
        if self.top_k < 0:
            raise InvalidArgument(f"top_k must be >= 0, got {self.top_k}", field="sampling_params.top_k")
        if self.n < 1:
            raise InvalidArgument(f"n must be >= 1, got {self.n}", field="sampling_params.n")
        if self.max_tokens < 0 or self.min_tokens < 0:
            raise InvalidArgument("max_tokens and min_tokens must be >= 0", field="sampling_params.max_tokens")
        if self.max_tokens and self.min_tokens > self.max_tokens:
            raise InvalidArgument(
                f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})",
                field="sampling_params.min_tokens",
            )
        if any(not s for s in self.stop_strings):
            raise InvalidArgument("stop strings must not be empty", field="sampling_params.stop_strings")
        if self.seed is not None and self.seed < 0:
            raise InvalidArgument("seed must be >= 0", field="sampling_params.seed")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def seed_of_sample(self, sample_index: int) -> int | None:
        return None if self.seed is None else self.seed + sample_index
