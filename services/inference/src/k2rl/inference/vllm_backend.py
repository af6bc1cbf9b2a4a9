"""The vLLM backend: the replica's engine interface served by vLLM's ``LLMEngine``.

``VllmEngine`` has the surface the servicer, the OpenAI API and ``EngineRunner`` use on the
native ``Engine`` (``add_request``, ``step``, ``abort``, ``sleep`` / ``wake_up``,
``begin_weight_update`` / ``commit_weights``, ``stats``), so ``backend: vllm`` changes
nothing above it. The runner drives ``LLMEngine.step()`` from its engine thread exactly
as it drives the native step, and runs everything else between two steps.

The narrow vLLM surface used (and mirrored by the test double in ``testing.py``):
``vllm.LLM(**engine_args)`` with ``llm.llm_engine.add_request / step / abort_request``,
``llm.sleep(level)``, ``llm.wake_up(tags)``, ``llm.collective_rpc(method, args=...)``,
``llm.reset_prefix_cache()``, ``vllm.SamplingParams`` and
``vllm.sampling_params.RequestOutputKind.DELTA``.

Semantics, where they differ from the native engine:

* Each sample is its own vLLM request (``n=1``, seed ``seed + i``), so samples are
  independent and abort / pause work per sample; vLLM's prefix cache shares the prompt.
* Logprobs: ``logprobs_mode="processed_logprobs"`` and ``logprobs=0`` return the sampled
  token's log-probability under the distribution it was sampled from, i.e. after
  temperature *and* after top-k / top-p / min-tokens masking (renormalised over the kept
  tokens). The native engine reports it after temperature and before masking; the two
  agree whenever top_k = 0, top_p = 1 and min_tokens is reached.
* ``priority`` is not passed on (vLLM refuses it unless started with the priority
  scheduling policy); KV-cache usage is not reported (0 in stats).
* Weight updates: only metadata crosses ``collective_rpc`` (bucket layouts, IPC handles,
  selectors, checksums, version, as serialised ``k2rl.common.v1`` messages). Each worker
  (``K2rlWorkerExtension``) opens the checkpoint engine's IPC slots itself (shm / CUDA IPC),
  verifies each bucket and copies its tensors out of the slot onto its own device before the
  bucket is acknowledged, and only when the whole version has arrived on every worker
  (prepare) calls its model's ``load_weights`` with views of those tensors (apply). vLLM's
  ``load_weights`` maps fused names and cuts each tensor-parallel rank's shard from the
  full tensors, so every worker receives full tensors (selectors name whole tensors).
  vLLM runs utility calls between two model steps, so no step sees a mix of versions. The
  in-flight policies are the native ones; PAUSE aborts the running samples in vLLM and
  resubmits each with prompt + its output so far, so every token after the swap is
  computed (KV cache included) by the new weights. A stop string spanning the tokens
  before and after such a resubmission is not detected.

Not exercised against a real vLLM here (no GPU, vLLM not installable on the CI image): the
tests run this module against the declared double ``k2rl.inference.testing.FakeVllm``.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from k2rl.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from k2rl.inference import vllm_worker
from k2rl.inference.engine import (
    EngineConfig,
    EngineStats,
    GenerationRequest,
    check_can_generate,
    checked_tokens,
)
from k2rl.inference.metrics import EngineObserver
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import FinishReason, PartialOutput, SequenceUpdate, VersionSpan
from k2rl.inference.sleep import MemoryPool, SleepState
from k2rl.inference.weights import (
    InFlightPolicy,
    LayoutMismatch,
    WeightUpdateOutcome,
    served_tensors,
    unnecessary_update,
)
from k2rl.models import CausalLM, ModelConfig, build_model
from k2rl.models.tokenizer import Tokenizer
from k2rl.weights import (
    DEFAULT_BUCKET_BYTES,
    BucketLayout,
    BufferDescriptor,
    ChecksumAlgorithm,
    ChecksumMismatch,
    LayoutError,
    Selector,
    SharedMemoryError,
)
from k2rl.weights import WeightStager as SharedMemoryStager
from k2rl.weights import proto as wire

WORKER_EXTENSION = "k2rl.inference.vllm_worker.K2rlWorkerExtension"
_RATE_WINDOW_S = 5.0
_WAKE_TAGS = {MemoryPool.WEIGHTS: "weights", MemoryPool.KV_CACHE: "kv_cache"}


def import_vllm() -> ModuleType:
    """The vllm package, or FailedPrecondition saying how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise FailedPrecondition(
            "backend 'vllm' needs vLLM on a GPU node: pip install 'k2rl-inference[vllm]' "
            f"(import failed: {error})"
        ) from error
    return vllm


@dataclass(frozen=True)
class VllmOptions:
    """How to start vLLM (``vllm.LLM`` keyword arguments, plus what k2rl requires)."""

    model: str
    tokenizer: str | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.85
    max_model_len: int = 0
    max_num_seqs: int = 64
    enable_prefix_caching: bool = True
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.model,
            "tokenizer": self.tokenizer or self.model,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_num_seqs": self.max_num_seqs,
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
            "enable_sleep_mode": True,
            "logprobs_mode": "processed_logprobs",
            "worker_extension_cls": WORKER_EXTENSION,
        }
        if self.max_model_len:
            args["max_model_len"] = self.max_model_len
        args.update(self.extra)
        return args


def sampling_params(
    vllm: Any,
    options: SamplingOptions,
    sample_index: int,
    generated: int,
    detokenize: bool,
    eos_token_ids: Seq[int] = (),
) -> Any:
    """``vllm.SamplingParams`` for one sample that already has ``generated`` output tokens
    (a resumed prefix, or tokens kept across a PAUSE): max / min tokens count them, as the
    proto says. ``eos_token_ids`` (the replica's, e.g. K2's ``<|im_end|>`` next to the
    config's EOS) become stop tokens unless ``ignore_eos``, as in the native engine."""
    max_tokens = options.max_tokens - generated if options.max_tokens else None
    stop_ids = list(dict.fromkeys([*options.stop_token_ids, *(() if options.ignore_eos else eos_token_ids)]))
    return vllm.SamplingParams(
        n=1,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k or -1,  # off: -1 in every vLLM version (0 too since ~0.10)
        seed=options.seed_of_sample(sample_index),
        max_tokens=max_tokens,
        min_tokens=max(0, options.min_tokens - generated),
        stop=list(options.stop_strings) or None,
        stop_token_ids=stop_ids or None,
        ignore_eos=options.ignore_eos,
        logprobs=0,  # only the sampled token's
        detokenize=detokenize,
        skip_special_tokens=False,
        output_kind=vllm.sampling_params.RequestOutputKind.DELTA,
    )


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    stop_string: str = ""
    stop_token_id: int | None = None


def finish_of(completion: Any, last_token: int | None) -> Finish | None:
    """Map a finished ``CompletionOutput`` (finish_reason / stop_reason) to ours."""
    reason = completion.finish_reason
    if reason is None:
        return None
    if reason == "length":
        return Finish(FinishReason.LENGTH)
    if reason == "abort":
        return Finish(FinishReason.ABORT)
    if reason != "stop":
        raise ValueError(f"unknown vLLM finish_reason {reason!r}")
    stop = completion.stop_reason
    if isinstance(stop, str):
        return Finish(FinishReason.STOP, stop_string=stop)
    return Finish(FinishReason.STOP, stop_token_id=stop if stop is not None else last_token)  # None: EOS


def sampled_logprobs(completion: Any, tokens: Seq[int]) -> list[float]:
    """The sampled tokens' log-probabilities from vLLM's per-position dicts."""
    positions = completion.logprobs
    if positions is None or len(positions) != len(tokens):
        raise RuntimeError("vLLM returned no logprob for a sampled token; requests must set logprobs=0")
    return [float(position[token].logprob) for position, token in zip(positions, tokens, strict=True)]


@dataclass(eq=False)
class _Sample:
    """One sample of a request and the vLLM request currently computing it."""

    request: GenerationRequest
    sample_index: int
    prompt: list[int]
    resume: list[int]
    vllm_id: str = ""
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)
    version_spans: list[VersionSpan] = field(default_factory=list)
    finish: Finish | None = None
    cached_prompt_tokens: int = 0
    first_token_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish is not None

    def append(self, tokens: list[int], logprobs: list[float], version: int) -> None:
        start = len(self.output_ids)
        self.output_ids.extend(tokens)
        self.output_logprobs.extend(logprobs)
        last = self.version_spans[-1] if self.version_spans else None
        if last is not None and last.version == version and last.end == start:
            self.version_spans[-1] = VersionSpan(last.start, start + len(tokens), version)
        else:
            self.version_spans.append(VersionSpan(start, start + len(tokens), version))

    def partial(self) -> PartialOutput:
        return PartialOutput(
            request_id=self.request.request_id,
            sample_index=self.sample_index,
            output_token_ids=list(self.output_ids),
            output_logprobs=list(self.output_logprobs),
            version_spans=list(self.version_spans),
            prompt_tokens=len(self.prompt) + len(self.resume),
            completion_tokens=len(self.output_ids),
            cached_prompt_tokens=self.cached_prompt_tokens,
        )


_FAILURES: dict[str, type[Exception]] = {
    vllm_worker.CHECKSUM_MISMATCH: ChecksumMismatch,
    vllm_worker.IPC_OPEN_FAILED: SharedMemoryError,
    vllm_worker.LAYOUT_MISMATCH: LayoutError,
    vllm_worker.SUPERSEDED: LayoutError,
}


def _worker_failure(result: Mapping[str, Any]) -> Exception:
    kind = _FAILURES.get(result["error"], RuntimeError)
    return kind(f"vLLM worker: {result['message']}")


def check_bucket_shapes(bucket: BucketLayout, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """LayoutError if a served tensor in ``bucket`` has another shape or a non-float dtype
    (tensors the model does not serve are not selected, so ignored)."""
    for piece in bucket.pieces:
        shape = shapes.get(piece.name)
        if shape is None:
            continue
        if piece.spec.shape != shape:
            raise LayoutError(f"{piece.name}: shape {piece.spec.shape} in bucket {bucket.index}, the model holds {shape}")
        if not piece.spec.dtype.is_floating_point:
            raise LayoutError(f"{piece.name}: dtype {piece.spec.dtype} in bucket {bucket.index}, the model holds floats")


@dataclass(eq=False)
class WorkerWeightUpdate:
    """A version the vLLM workers receive themselves (what ``VllmEngine.begin_weight_update``
    returns, where the native engine returns a ``WeightStager``): every served tensor, whole."""

    update_id: int
    version: int
    shapes: Mapping[str, tuple[int, ...]]
    prepared: bool = False

    def selectors(self) -> list[Selector]:
        return [Selector(name) for name in self.shapes]

    def receiver(self, call: Callable[[Callable[[VllmEngine], Any]], Any]) -> WorkerReceiver:
        return WorkerReceiver(self, call)


class WorkerReceiver:
    """``k2rl.weights.WeightReceiver``'s interface (begin / load_bucket / commit / close) over
    the workers' receivers, so the UpdateWeights session drives both backends alike.
    ``call(fn)`` runs ``fn(engine)`` on the engine thread (``EngineRunner.call``): a
    ``collective_rpc`` goes to the engine between two of its steps."""

    def __init__(self, update: WorkerWeightUpdate, call: Callable[[Callable[[VllmEngine], Any]], Any]) -> None:
        self._update = update
        self._call = call

    def begin(self, version: int, bucket_count: int, slots: Mapping[int, BufferDescriptor], verify: bool = True) -> None:
        if version != self._update.version:
            raise LayoutError(f"begin of version {version} for an update of version {self._update.version}")
        self._call(lambda engine: engine.open_worker_update(self._update, bucket_count, slots, verify))

    def load_bucket(self, bucket: BucketLayout, slot: int, slot_byte_offset: int = 0) -> int:
        check_bucket_shapes(bucket, self._update.shapes)
        return self._call(lambda engine: engine.load_worker_bucket(self._update, bucket, slot, slot_byte_offset))

    def commit(self, version: int, bucket_count: int) -> dict[str, torch.Tensor]:
        """Every worker holds the whole version; nothing is handed over here (the workers keep
        it until ``VllmEngine.commit_weights`` applies it)."""
        self._call(lambda engine: engine.prepare_worker_update(self._update))
        return {}

    def close(self) -> None:
        self._call(lambda engine: engine.drop_worker_update(self._update))


class VllmEngine:
    """The engine interface over ``vllm.LLM``. Single-threaded like ``Engine``: call it from
    the ``EngineRunner`` thread only."""

    backend = "vllm"

    def __init__(
        self,
        llm: Any,
        vllm: Any,
        tokenizer: Tokenizer,
        model_config: ModelConfig,
        *,
        tensor_parallel_size: int = 1,
        dtype: torch.dtype = torch.bfloat16,
        max_running_requests: int = 64,
        max_context_length: int = 0,
        weight_version: int = 0,
        observer: EngineObserver | None = None,
    ) -> None:
        self._llm = llm
        self._vllm = vllm
        self.tokenizer = tokenizer
        # Names and shapes of the served tensors only (UpdateWeights validates against them).
        self.model: CausalLM = build_model(model_config, device="meta", dtype=dtype, seed=None)
        self.tensor_parallel_size = tensor_parallel_size
        self.config = EngineConfig(max_running_requests=max_running_requests)
        self.observer = observer or EngineObserver()
        self.device = torch.device("cuda")
        self._dtype = dtype
        positions = model_config.max_position_embeddings
        self.max_context_length = min(max_context_length or positions, positions)
        eos = set(tokenizer.stop_token_ids)
        if model_config.eos_token_id is not None:
            eos.add(int(model_config.eos_token_id))
        self.eos_token_ids = tuple(sorted(eos))
        self.weight_version = weight_version
        self.has_weights = True
        self.sleep_state = SleepState.AWAKE
        self._requests: dict[str, list[_Sample]] = {}
        self._by_vllm_id: dict[str, _Sample] = {}
        self._arrival: dict[str, float] = {}
        self._outbox: list[SequenceUpdate] = []
        self._submissions = itertools.count()
        self.prompt_tokens_total = 0
        self.cached_prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._update_ids = itertools.count(1)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def has_work(self) -> bool:
        return bool(self._by_vllm_id)

    def has_request(self, request_id: str) -> bool:
        return request_id in self._requests

    # --- requests -------------------------------------------------------------------

    def add_request(self, request: GenerationRequest) -> list[_Sample]:
        check_can_generate(self.sleep_state, self.has_weights, self.weight_version, request.min_weight_version)
        if request.request_id in self._requests:
            raise AlreadyExists(f"request {request.request_id!r} is still running", field="request_id")
        prompt, resume = checked_tokens(request, self.vocab_size, self.max_context_length)
        samples = [_Sample(request, i, prompt, resume) for i in range(request.options.n)]
        self._requests[request.request_id] = samples
        self._arrival[request.request_id] = time.monotonic()
        try:
            for sample in samples:
                self._submit(sample)
        except Exception:
            submitted = [s.vllm_id for s in samples if self._by_vllm_id.pop(s.vllm_id, None) is not None]
            if submitted:
                self._llm.llm_engine.abort_request(submitted)
            del self._requests[request.request_id], self._arrival[request.request_id]
            raise
        self.prompt_tokens_total += len(prompt) + len(resume)
        return samples

    def _submit(self, sample: _Sample) -> None:
        """Queue (or re-queue, after a PAUSE) the rest of ``sample`` in vLLM."""
        options = sample.request.options
        generated = len(sample.resume) + len(sample.output_ids)
        detokenize = sample.request.return_text or bool(options.stop_strings)
        params = sampling_params(self._vllm, options, sample.sample_index, generated, detokenize, self.eos_token_ids)
        sample.vllm_id = f"{sample.request.request_id}#{sample.sample_index}#{next(self._submissions)}"
        tokens = sample.prompt + sample.resume + sample.output_ids
        try:
            self._llm.llm_engine.add_request(sample.vllm_id, {"prompt_token_ids": tokens}, params)
        except ValueError as error:  # vLLM's input validation (e.g. beyond its max_model_len)
            raise InvalidArgument(f"vLLM refused the request: {error}", field="prompt") from error
        self._by_vllm_id[sample.vllm_id] = sample

    def step(self) -> list[SequenceUpdate]:
        """One ``LLMEngine.step()``; returns every update since the last call."""
        now = time.monotonic()
        for output in self._llm.llm_engine.step():
            sample = self._by_vllm_id.get(output.request_id)
            if sample is not None:
                self._take(sample, output, now)
        return self.drain_updates()

    def _take(self, sample: _Sample, output: Any, now: float) -> None:
        completion = output.outputs[0]
        tokens = [int(t) for t in completion.token_ids]
        logprobs = sampled_logprobs(completion, tokens)
        if tokens:
            if sample.first_token_at is None:
                sample.cached_prompt_tokens = int(getattr(output, "num_cached_tokens", 0) or 0)
                self.cached_prompt_tokens_total += sample.cached_prompt_tokens
                sample.first_token_at = now
                self.observer.first_token(now - self._arrival[sample.request.request_id])
            sample.append(tokens, logprobs, self.weight_version)
            self.generated_tokens_total += len(tokens)
            self._recent.append((now, len(tokens)))
        last_token = sample.output_ids[-1] if sample.output_ids else None
        finish = finish_of(completion, last_token) if output.finished else None
        text = completion.text if sample.request.return_text else ""
        self._emit(sample, tokens, logprobs, text, finish)

    def _emit(self, sample: _Sample, tokens: list[int], logprobs: list[float], text: str, finish: Finish | None) -> None:
        update = SequenceUpdate(
            request_id=sample.request.request_id,
            sample_index=sample.sample_index,
            token_ids=tokens,
            logprobs=logprobs,
            weight_version=self.weight_version,
            text=text or "",
        )
        if finish is not None:
            sample.finish = finish
            self._by_vllm_id.pop(sample.vllm_id, None)
            update.finish_reason = finish.reason
            update.matched_stop_string = finish.stop_string
            update.matched_stop_token_id = finish.stop_token_id
            update.prompt_tokens = len(sample.prompt) + len(sample.resume)
            update.completion_tokens = len(sample.output_ids)
            update.cached_prompt_tokens = sample.cached_prompt_tokens
            self._on_finished(sample)
        self._outbox.append(update)

    def _on_finished(self, sample: _Sample) -> None:
        assert sample.finish is not None
        generated = len(sample.output_ids)
        if sample.finish.reason is not FinishReason.ABORT and sample.first_token_at is not None and generated > 1:
            self.observer.time_per_output_token((time.monotonic() - sample.first_token_at) / (generated - 1))
        request_id = sample.request.request_id
        if all(s.finished for s in self._requests[request_id]):
            del self._requests[request_id]
            del self._arrival[request_id]
            self.observer.request_finished(sample.finish.reason.value)

    def drain_updates(self) -> list[SequenceUpdate]:
        updates, self._outbox = self._outbox, []
        return updates

    # --- abort ----------------------------------------------------------------------

    def abort(self, request_ids: Iterable[str] | None = None) -> tuple[list[PartialOutput], list[str]]:
        """As ``Engine.abort``: unfinished samples' outputs so far, and ids not running."""
        ids = list(self._requests) if request_ids is None else list(dict.fromkeys(request_ids))
        partials: list[PartialOutput] = []
        not_running = [request_id for request_id in ids if request_id not in self._requests]
        running = [s for request_id in ids for s in self._requests.get(request_id, []) if not s.finished]
        if running:
            self._llm.llm_engine.abort_request([s.vllm_id for s in running])
        for sample in running:
            partials.append(sample.partial())
            self._emit(sample, [], [], "", Finish(FinishReason.ABORT))
        return partials, not_running

    # --- sleep / wake ---------------------------------------------------------------

    def sleep(self, level: int) -> int:
        """vLLM sleep mode: level 1 offloads weights to host memory and drops the KV cache,
        level 2 drops both (version 0 until the next update). Returns device bytes freed."""
        if level not in (1, 2):
            raise InvalidArgument(f"sleep level must be 1 or 2, got {level}", field="level")
        if self.has_work:
            raise FailedPrecondition("requests are running; Abort them (and keep their outputs) before Sleep")
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            raise FailedPrecondition(f"the replica is already asleep ({self.sleep_state.value})")
        used = _device_memory_used()
        self._llm.sleep(level=level)
        if level == 2:
            self.has_weights = False
            self.weight_version = 0
        self.sleep_state = SleepState.LEVEL_1 if level == 1 else SleepState.LEVEL_2
        return max(0, used - _device_memory_used())

    def wake_up(self, pools: Seq[MemoryPool] = ()) -> None:
        """Re-allocate weights and/or the KV cache (both when ``pools`` is empty); the KV
        cache only comes back next to weights, as in the native engine."""
        wanted = set(pools) or {MemoryPool.WEIGHTS, MemoryPool.KV_CACHE}
        tags: list[str] = []
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            tags.append(_WAKE_TAGS[MemoryPool.WEIGHTS])
        if MemoryPool.KV_CACHE in wanted and self.sleep_state is not SleepState.AWAKE:
            tags.append(_WAKE_TAGS[MemoryPool.KV_CACHE])
        if not tags:
            return
        self._llm.wake_up(tags=tags)
        self.sleep_state = SleepState.AWAKE if "kv_cache" in tags else SleepState.WEIGHTS_ONLY

    def weight_bytes(self) -> int:
        """Device memory in use (weights and KV cache are in vLLM's workers, measured together)."""
        return _device_memory_used()

    def kv_cache_bytes(self) -> int:
        return 0  # counted in weight_bytes

    # --- weights --------------------------------------------------------------------

    def begin_weight_update(self, version: int) -> WorkerWeightUpdate | WeightUpdateOutcome:
        """An update the workers will receive, or the outcome that makes it unnecessary."""
        skip = unnecessary_update(version, served_version=self.weight_version, has_weights=self.has_weights)
        if skip is not None:
            return skip
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            self.wake_up([MemoryPool.WEIGHTS])
        shapes = {name: tuple(tensor.shape) for name, tensor in served_tensors(self.model).items()}
        return WorkerWeightUpdate(next(self._update_ids), version, shapes)

    def open_worker_update(self, update: WorkerWeightUpdate, bucket_count: int,
                           slots: Mapping[int, BufferDescriptor], verify: bool = True) -> None:
        """Every worker opens the IPC slots and prepares to receive ``update``."""
        handles = [[int(slot), wire.descriptor_to_proto(d).SerializeToString()] for slot, d in slots.items()]
        selectors = [wire.selector_to_proto(s).SerializeToString() for s in update.selectors()]
        self._on_workers(update, "k2rl_update_begin", update.update_id, update.version, bucket_count, handles,
                         selectors, verify)

    def load_worker_bucket(self, update: WorkerWeightUpdate, bucket: BucketLayout, slot: int,
                           slot_byte_offset: int = 0) -> int:
        """Every worker verifies ``bucket`` in its slot and copies out its tensors; returns the
        bytes one worker copied. Afterwards the slot may be reused."""
        message = wire.bucket_to_proto(bucket).SerializeToString()
        results = self._on_workers(update, "k2rl_update_bucket", update.update_id, message, slot, slot_byte_offset)
        return int(results[0]["bytes"])

    def prepare_worker_update(self, update: WorkerWeightUpdate) -> None:
        """Every worker holds every selected tensor of the version (the model is untouched)."""
        self._on_workers(update, "k2rl_update_prepare", update.update_id)
        update.prepared = True

    def drop_worker_update(self, update: WorkerWeightUpdate) -> None:
        """Workers forget ``update`` (no-op where it was applied or never begun)."""
        self._llm.collective_rpc("k2rl_update_abort", args=(update.update_id,))

    def _on_workers(self, update: WorkerWeightUpdate, method: str, *args: Any) -> list[dict[str, Any]]:
        """``collective_rpc`` of one update step; if any worker failed, all drop the update
        and the first failure is raised as its kind (ChecksumMismatch, LayoutError, OSError)."""
        results = self._llm.collective_rpc(method, args=args)
        failed = [result for result in results if result["error"]]
        if failed:
            self.drop_worker_update(update)
            raise _worker_failure(failed[0])
        return results

    def commit_weights(self, update: WorkerWeightUpdate,
                       policy: InFlightPolicy = InFlightPolicy.REFUSE) -> WeightUpdateOutcome:
        """Have every worker load its prepared version into the model (call between steps)."""
        if not update.prepared:
            raise LayoutMismatch(f"the vLLM workers do not hold all of version {update.version}")
        paused: list[_Sample] = []
        if self.has_work:
            if policy is InFlightPolicy.REFUSE:
                self.drop_worker_update(update)
                return WeightUpdateOutcome.BUSY
            if policy is InFlightPolicy.ABORT:
                self.abort()
            else:
                paused = self._pause_running()
        results = self._llm.collective_rpc("k2rl_update_apply", args=(update.update_id,))
        if any(result["error"] for result in results):
            return self._lose_weights(paused)
        self._llm.reset_prefix_cache()
        self.weight_version = update.version
        self.has_weights = True
        self.observer.weight_version(update.version)
        for sample in paused:
            self._submit(sample)
        return WeightUpdateOutcome.APPLIED

    def _lose_weights(self, paused: list[_Sample]) -> WeightUpdateOutcome:
        """A worker's ``load_weights`` failed part-way: the model is a mix of versions, so it is
        served no more (version 0, like sleep level 2) and paused samples end with ABORT."""
        self.has_weights = False
        self.weight_version = 0
        self.observer.weight_version(0)
        for sample in paused:
            self._emit(sample, [], [], "", Finish(FinishReason.ABORT))
        return WeightUpdateOutcome.TRANSFER_FAILED

    def apply_weights(
        self,
        version: int,
        tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
        policy: InFlightPolicy = InFlightPolicy.REFUSE,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> WeightUpdateOutcome:
        """Publish ``tensors`` in a shared-memory staging buffer (as a trainer does) and have the
        workers load them from there, the same path as an UpdateWeights stream."""
        if self.has_work and policy is InFlightPolicy.REFUSE:
            return WeightUpdateOutcome.BUSY
        begun = self.begin_weight_update(version)
        if isinstance(begun, WeightUpdateOutcome):
            return begun
        stager = SharedMemoryStager(bucket_bytes, ChecksumAlgorithm.XXH3_64, tag="vllm.apply")
        receiver = begun.receiver(lambda run: run(self))
        try:
            staged = stager.stage(tensors)
            receiver.begin(version, len(staged.plan.buckets), {0: staged.buffer})
            for bucket, offset in zip(staged.plan.buckets, staged.offsets, strict=True):
                receiver.load_bucket(bucket, 0, offset)
            receiver.commit(version, len(staged.plan.buckets))
            return self.commit_weights(begun, policy)
        finally:
            receiver.close()
            stager.close()

    def _pause_running(self) -> list[_Sample]:
        """Abort the running samples in vLLM, keeping their outputs for resubmission."""
        running = list(self._by_vllm_id.values())
        self._llm.llm_engine.abort_request([s.vllm_id for s in running])
        self._by_vllm_id.clear()
        return running

    # --- stats ----------------------------------------------------------------------

    def stats(self) -> EngineStats:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent.popleft()
        return EngineStats(
            running_requests=len(self._requests),
            waiting_requests=0,
            kv_cache_usage=0.0,
            kv_cache_capacity_tokens=0,
            prompt_tokens_total=self.prompt_tokens_total,
            cached_prompt_tokens_total=self.cached_prompt_tokens_total,
            generated_tokens_total=self.generated_tokens_total,
            generation_tokens_per_second=sum(n for _, n in self._recent) / _RATE_WINDOW_S,
            weight_version=self.weight_version,
        )


def _device_memory_used() -> int:
    """Bytes in use on this process's current CUDA device (all processes), 0 without CUDA."""
    if not torch.cuda.is_available():
        return 0
    free, total = torch.cuda.mem_get_info()
    return total - free
