"""Test helpers for this package and others that drive the engine: a tokenizer for the tiny
model vocabularies of ``k2rl.models.testing``, stepping an engine to completion,
``RingPublisher`` (a checkpoint-engine-style writer of weight buckets into two shm slots),
``publish_in_child`` (one in another process), and ``FakeVllm``, a declared test double of the vLLM API surface the vLLM backend uses."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from k2rl.inference.engine import Engine, GenerationRequest
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import SequenceUpdate
from k2rl.inference.vllm_worker import K2rlWorkerExtension
from k2rl.weights import (
    BucketLayout,
    BufferDescriptor,
    ChecksumAlgorithm,
    SharedBuffer,
    WeightStager,
    create_buffer,
    describe_shm,
)

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



class RingPublisher:
    """The checkpoint engine's broadcast data path, in miniature: a version staged by the
    trainer-side ``k2rl.weights.WeightStager`` (shm, per-bucket checksums) is moved bucket
    by bucket into two shm IPC slots, bucket i into slot i % 2. The caller reuses a slot
    only after the replica acknowledged the bucket in it, as the engine does."""

    def __init__(self, params: dict[str, torch.Tensor], bucket_bytes: int = 1 << 14,
                 algorithm: ChecksumAlgorithm = ChecksumAlgorithm.XXH3_64) -> None:
        self._stager = WeightStager(bucket_bytes, algorithm, tag="test.stage")
        self._staged = self._stager.stage(params)
        self._slots: list[SharedBuffer] = [create_buffer(bucket_bytes, "test.slot") for _ in range(2)]

    @property
    def buckets(self) -> tuple[BucketLayout, ...]:
        return self._staged.plan.buckets

    @property
    def slots(self) -> dict[int, BufferDescriptor]:
        return {i: describe_shm(slot) for i, slot in enumerate(self._slots)}

    def place(self, index: int, corrupt: bool = False) -> int:
        """Copy bucket ``index`` into its slot (one byte flipped if ``corrupt``); return the slot."""
        bucket = self.buckets[index]
        slot = self._slots[index % 2].tensor
        slot[:bucket.byte_size].copy_(self._staged.bucket_bytes(self._stager.staging, index))
        if corrupt:
            slot[bucket.byte_size // 2] ^= 1
        return index % 2

    def close(self) -> None:
        self._stager.close()
        for slot in self._slots:
            slot.close()


def publish_in_child(params: dict[str, torch.Tensor], bucket_bytes: int, on_cuda: bool, conn) -> None:
    """A checkpoint engine in another process (run with the spawn start method), on its
    one-node data path: the whole version staged by ``k2rl.weights.WeightStager`` in one
    shm buffer, bucket i at byte ``offsets[i]`` (SUM64 checksums), or with ``on_cuda`` a
    copy of it in a CUDA allocation exported by CUDA IPC (which the exporting process
    itself cannot open). Sends ``(buckets, offsets, descriptor)`` over ``conn``, then
    obeys ``("flip", bucket_index)`` (flip one byte of that bucket, to corrupt it and to
    undo that) until ``("done",)``."""
    from k2rl.weights import describe_cuda

    stager = WeightStager(bucket_bytes, ChecksumAlgorithm.SUM64, tag="test.child")
    staged = stager.stage(params)
    data = stager.staging.to("cuda") if on_cuda else stager.staging
    descriptor = describe_cuda(data) if on_cuda else staged.buffer
    conn.send((staged.plan.buckets, staged.offsets, descriptor))
    for command, *args in iter(conn.recv, ("done",)):
        if command == "flip":
            data[staged.offsets[args[0]] + staged.plan.buckets[args[0]].byte_size // 2] ^= 1
            if on_cuda:
                torch.cuda.synchronize()
        conn.send("ok")
    stager.close()


# --- FakeVllm: a declared test double of the vLLM surface the vLLM backend uses ----------


class _OutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class FakeSamplingParams:
    """The ``vllm.SamplingParams`` fields the backend sets (others are a TypeError)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    output_kind: _OutputKind = _OutputKind.CUMULATIVE


@dataclass
class _FakeRequest:
    request_id: str
    tokens: list[int]
    params: FakeSamplingParams
    generator: torch.Generator | None
    generated: int = 0


class _LoadableModel:
    """A k2rl model behind vLLM's model contract: ``parameters()`` and ``load_weights``."""

    def __init__(self, model) -> None:
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def load_weights(self, weights) -> set[str]:
        from k2rl.inference.weights import served_tensors

        targets = served_tensors(self.model)
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                targets[name].copy_(tensor)
                loaded.add(name)
        return loaded


class _FakeWorker(K2rlWorkerExtension):
    def __init__(self, model) -> None:
        self.model_runner = SimpleNamespace(model=_LoadableModel(model))


class FakeLLM:
    """Stands in for ``vllm.LLM`` (and its ``llm_engine``) in tests: a ``k2rl.models`` model
    loaded from the checkpoint directory, run on CPU by full recompute, one token per request
    per ``step()``, sampled from the processed distribution (temperature, min-tokens ban,
    top-k, top-p) whose log-probability it reports (vLLM's ``processed_logprobs``). It does
    not detokenize (``stop`` strings raise) and records every call in ``calls``."""

    def __init__(self, **engine_args) -> None:
        from k2rl.models import load_model

        self.engine_args = engine_args
        self.model = load_model(engine_args["model"], dtype="float32").eval()
        self.worker = _FakeWorker(self.model)
        self.llm_engine = self
        self.requests: dict[str, _FakeRequest] = {}
        self.sleep_level = 0
        self.kv_cache_allocated = True
        self.calls: list[tuple] = []

    # llm_engine surface
    def add_request(self, request_id: str, prompt: dict, params: FakeSamplingParams) -> None:
        if not self.kv_cache_allocated or self.sleep_level:
            raise RuntimeError("FakeLLM: add_request while asleep")
        if params.stop:
            raise NotImplementedError("FakeLLM does not detokenize; stop strings are not supported")
        if request_id in self.requests or params.n != 1 or params.output_kind is not _OutputKind.DELTA:
            raise ValueError("FakeLLM: duplicate id, n != 1 or not DELTA output")
        generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
        self.requests[request_id] = _FakeRequest(request_id, list(prompt["prompt_token_ids"]), params, generator)
        self.calls.append(("add_request", request_id))

    def abort_request(self, request_ids: list[str]) -> None:
        self.calls.append(("abort_request", list(request_ids)))
        for request_id in request_ids:
            self.requests.pop(request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[SimpleNamespace]:
        outputs = []
        for request in list(self.requests.values()):
            token, logprob = self._sample(request)
            request.tokens.append(token)
            request.generated += 1
            finish_reason, stop_reason = self._finish(request, token)
            if finish_reason is not None:
                del self.requests[request.request_id]
            completion = SimpleNamespace(
                token_ids=[token], logprobs=[{token: SimpleNamespace(logprob=logprob)}], text="",
                finish_reason=finish_reason, stop_reason=stop_reason)
            outputs.append(SimpleNamespace(request_id=request.request_id, outputs=[completion],
                                           finished=finish_reason is not None, num_cached_tokens=0))
        return outputs

    def _sample(self, request: _FakeRequest) -> tuple[int, float]:
        params = request.params
        with torch.no_grad():
            logits = self.model(torch.tensor([request.tokens]))[0, -1].float()
        if request.generated < params.min_tokens:
            eos = self.model.config.eos_token_id
            banned = list(params.stop_token_ids or []) + ([] if eos is None else [int(eos)])
            logits[banned] = float("-inf")
        if params.temperature == 0.0:
            token = int(logits.argmax())
            return token, float(torch.log_softmax(logits, -1)[token])
        logits = logits / params.temperature
        if params.top_k > 0:
            logits[logits < logits.topk(params.top_k).values[-1]] = float("-inf")
        if params.top_p < 1.0:
            ordered, order = logits.sort(descending=True)
            drop = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1) > params.top_p
            logits[order[drop]] = float("-inf")
        logprobs = torch.log_softmax(logits, -1)
        token = int(torch.multinomial(logprobs.exp(), 1, generator=request.generator))
        return token, float(logprobs[token])

    def _finish(self, request: _FakeRequest, token: int) -> tuple[str | None, int | None]:
        params = request.params
        eos = self.model.config.eos_token_id
        if request.generated >= params.min_tokens:
            if token in (params.stop_token_ids or []):
                return "stop", token
            if not params.ignore_eos and eos is not None and token == int(eos):
                return "stop", None
        if params.max_tokens is not None and request.generated >= params.max_tokens:
            return "length", None
        if len(request.tokens) >= self.model.config.max_position_embeddings:
            return "length", None
        return None, None

    # LLM surface
    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        self.sleep_level, self.kv_cache_allocated = level, False
        if level == 2:  # weights discarded: garbage until reloaded
            with torch.no_grad():
                for parameter in self.model.parameters():
                    parameter.fill_(float("nan"))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", tuple(tags or ())))
        tags = tags or ["weights", "kv_cache"]
        if "weights" in tags:
            self.sleep_level = 0
        if "kv_cache" in tags:
            self.kv_cache_allocated = True

    def collective_rpc(self, method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None):
        """Calls the worker in this process, but only with arguments vLLM's RPC serialisation
        carries without pickling (plain values: no tensors or other objects cross)."""
        _check_plain((args, kwargs or {}), method)
        self.calls.append(("collective_rpc", method))
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True


_PLAIN = (type(None), bool, int, float, str, bytes)


def _check_plain(value, method: str) -> None:
    """TypeError unless ``value`` is built of plain values, lists, tuples and dicts."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, method)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, method)
            _check_plain(item, method)
        return
    raise TypeError(f"collective_rpc {method!r}: {type(value).__name__} is not plain metadata")


class FakeVllm:
    """Stands in for the ``vllm`` module: ``LLM``, ``SamplingParams``,
    ``sampling_params.RequestOutputKind``; keeps the LLMs it created in ``instances``."""

    SamplingParams = FakeSamplingParams
    sampling_params = SimpleNamespace(RequestOutputKind=_OutputKind)

    def __init__(self) -> None:
        self.instances: list[FakeLLM] = []

    def LLM(self, **engine_args) -> FakeLLM:  # noqa: N802 - mirrors vllm.LLM
        llm = FakeLLM(**engine_args)
        self.instances.append(llm)
        return llm
