"""Test helpers for this package and others that drive the engine: a tokenizer for the tiny
model vocabularies of ``k2rl.models.testing``, stepping an engine to completion."""

from __future__ import annotations

from k2rl.inference.engine import Engine, GenerationRequest
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import SequenceUpdate

# The tiny configs have a 96-token vocabulary, too small for the byte tokenizer.


class TinyTokenizer:
    """One character per token: id i < 90 is chr(ord('a') + i % 26); ids 90.. are the specials
    "A", "B", ... (90 = EOS), dropped by ``skip_special_tokens``."""

    vocab_size = 96
    bos_token_id = None
    eos_token_id = 90
    pad_token_id = None
    chat_template = None

    @property
    def stop_token_ids(self) -> list[int]:
        return [90]

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return [(ord(c) - ord("a")) % 26 for c in text]

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        return "".join(self._piece(int(i), skip_special_tokens) for i in ids)

    @staticmethod
    def _piece(i: int, skip_special_tokens: bool) -> str:
        if i < 90:
            return chr(ord("a") + i % 26)
        return "" if skip_special_tokens else chr(ord("A") + i - 90)

    def token_to_id(self, token: str) -> int | None:
        return None


def run_to_completion(engine: Engine, max_steps: int = 500) -> dict[tuple[str, int], list[SequenceUpdate]]:
    """Step until idle; updates grouped by (request id, sample index)."""
    out: dict[tuple[str, int], list[SequenceUpdate]] = {}
    for _ in range(max_steps):
        if not engine.has_work:
            break
        for update in engine.step():
            out.setdefault((update.request_id, update.sample_index), []).append(update)
    assert not engine.has_work, "engine did not finish within the step bound"
    for update in engine.drain_updates():
        out.setdefault((update.request_id, update.sample_index), []).append(update)
    return out


def tokens_of(updates: list[SequenceUpdate]) -> list[int]:
    return [t for u in updates for t in u.token_ids]


def logprobs_of(updates: list[SequenceUpdate]) -> list[float]:
    return [lp for u in updates for lp in u.logprobs]


def request(request_id: str, prompt: list[int], **options) -> GenerationRequest:
    extra = {k: options.pop(k) for k in ("resume_output_token_ids", "priority", "return_text", "min_weight_version")
             if k in options}
    return GenerationRequest(request_id, prompt, SamplingOptions(**options), **extra)

