"""The native rollout engine: requests in, tokens + logprobs out, one ``step()`` at a time.

Single-threaded by design (like nano-vllm's ``LLMEngine``): ``runner.EngineRunner`` drives
``step()`` from one thread and serialises every other call with it, so anything that is
not a step (abort, sleep, weight swap) happens *between* steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch

from k2rl.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from k2rl.inference.block_manager import BlockManager
from k2rl.inference.metrics import EngineObserver
from k2rl.inference.model_runner import ModelRunner
from k2rl.inference.sampler import SampleRow, sample
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.scheduler import Scheduler
from k2rl.inference.sequence import (
    FinishReason,
    PartialOutput,
    Sequence,
    SequenceStatus,
    SequenceUpdate,
)
from k2rl.inference.sleep import MemoryPool, SleepState
from k2rl.inference.stop import match_stop_string, visible_text
from k2rl.inference.weights import (
    InFlightPolicy,
    LayoutMismatch,
    StandbyWeights,
    WeightStager,
    WeightUpdateOutcome,
    unnecessary_update,
)
from k2rl.models import CausalLM, KVCache
from k2rl.models.kv_cache import bytes_per_token
from k2rl.models.tokenizer import Tokenizer

# Tokens/s is averaged over this window.
_RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_kv_blocks: int = 0  # 0: as many as kv_cache_bytes holds
    kv_cache_bytes: int = 64 << 20
    max_running_requests: int = 64
    max_batched_tokens: int = 4096
    max_context_length: int = 0  # 0: the model's max_position_embeddings (capped by the cache)
    enable_prefix_caching: bool = True
    seed: int = 0
    # Receive updates in place into a second parameter set (one extra copy of the weights,
    # held from the first update on); None = on for a CPU device, off for accelerators.
    weight_update_standby: bool | None = None


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: Seq[int]
    options: SamplingOptions = field(default_factory=SamplingOptions)
    resume_output_token_ids: Seq[int] = ()
    min_weight_version: int = 0
    priority: int = 0
    return_text: bool = False


@dataclass(frozen=True)
class EngineStats:
    running_requests: int
    waiting_requests: int
    kv_cache_usage: float
    kv_cache_capacity_tokens: int
    prompt_tokens_total: int
    cached_prompt_tokens_total: int
    generated_tokens_total: int
    generation_tokens_per_second: float
    weight_version: int


@dataclass
class _RequestState:
    request: GenerationRequest
    sequences: list[Sequence]
    arrival: float
    first_token_at: float | None = None


def check_can_generate(sleep_state: SleepState, has_weights: bool, weight_version: int, min_weight_version: int) -> None:
    """FailedPrecondition unless a replica in this state may take a request (any backend)."""
    if sleep_state is not SleepState.AWAKE:
        raise FailedPrecondition(f"the replica is asleep ({sleep_state.value}); call WakeUp before generating")
    if not has_weights:
        raise FailedPrecondition("the replica holds no complete weight version; run UpdateWeights first")
    if min_weight_version > weight_version:
        raise FailedPrecondition(
            f"the replica serves weight version {weight_version}, below the required {min_weight_version}",
            field="min_weight_version",
        )


def checked_tokens(request: GenerationRequest, vocab_size: int, max_context_length: int) -> tuple[list[int], list[int]]:
    """The request's prompt and resumed output as ints, after the checks every backend applies."""
    prompt = [int(t) for t in request.prompt_token_ids]
    resume = [int(t) for t in request.resume_output_token_ids]
    options = request.options
    if not prompt:
        raise InvalidArgument("the prompt is empty", field="prompt")
    bad = next((t for t in (*prompt, *resume) if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidArgument(f"token id {bad} is outside the vocabulary [0, {vocab_size})", field="prompt")
    if len(prompt) + len(resume) >= max_context_length:
        raise InvalidArgument(
            f"prompt + resumed output is {len(prompt) + len(resume)} tokens; the context holds "
            f"{max_context_length} (including at least one generated token)",
            field="prompt",
        )
    if resume and options.n > 1:
        raise InvalidArgument("resume_output_token_ids requires n <= 1", field="resume_output_token_ids")
    if options.max_tokens and len(resume) >= options.max_tokens:
        raise InvalidArgument(
            f"the resumed output ({len(resume)} tokens) already reaches max_tokens ({options.max_tokens})",
            field="resume_output_token_ids",
        )
    return prompt, resume


class Engine:
    backend = "native"  # GetModelInfo.backend
    tensor_parallel_size = 1

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Tokenizer,
        config: EngineConfig | None = None,
        *,
        weight_version: int = 0,
        observer: EngineObserver | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.observer = observer or EngineObserver()
        self.device = model.lm_head.weight.device
        self.weight_version = weight_version
        self.has_weights = True
        self.sleep_state = SleepState.AWAKE
        self.generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self.runner = ModelRunner(model, self.config.block_size)
        self.num_kv_blocks = self._kv_blocks()
        self.kv_cache: KVCache | None = None
        self.scheduler: Scheduler | None = None
        self._allocate_kv_cache()
        positions = model.config.max_position_embeddings
        capacity = self.num_kv_blocks * self.config.block_size
        self.max_context_length = min(self.config.max_context_length or positions, positions, capacity)
        eos = set(tokenizer.stop_token_ids)
        if model.config.eos_token_id is not None:
            eos.add(int(model.config.eos_token_id))
        self.eos_token_ids = tuple(sorted(eos))
        self._requests: dict[str, _RequestState] = {}
        self._outbox: list[SequenceUpdate] = []
        self._host_weights: dict[str, torch.Tensor] | None = None
        standby = self.config.weight_update_standby
        if standby is None:
            standby = self.device.type == "cpu"
        self.standby_weights = StandbyWeights() if standby else None
        self.prompt_tokens_total = 0
        self.cached_prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self._recent: deque[tuple[float, int]] = deque()

    # --- memory ---------------------------------------------------------------------

    def _kv_blocks(self) -> int:
        if self.config.num_kv_blocks:
            return self.config.num_kv_blocks
        per_token = bytes_per_token(
            self.model.kv_cache_spec(), self.model.config.num_hidden_layers, self.model.lm_head.weight.dtype
        )
        return max(1, self.config.kv_cache_bytes // (per_token * self.config.block_size))

    def _allocate_kv_cache(self) -> None:
        self.kv_cache = self.model.allocate_kv_cache(self.num_kv_blocks * self.config.block_size)
        manager = BlockManager(self.num_kv_blocks, self.config.block_size, self.config.enable_prefix_caching)
        self.scheduler = Scheduler(manager, self.config.max_running_requests, self.config.max_batched_tokens)

    def kv_cache_bytes(self) -> int:
        if self.kv_cache is None:
            return 0
        return sum(t.numel() * t.element_size() for layer in self.kv_cache.layers for t in layer.values())

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if p.device.type != "meta")

    def standby_weight_bytes(self) -> int:
        """Memory held by the standby parameter set (0 when off or not allocated yet)."""
        return self.standby_weights.nbytes if self.standby_weights is not None else 0

    # --- requests -------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def _check_can_generate(self, min_weight_version: int = 0) -> None:
        check_can_generate(self.sleep_state, self.has_weights, self.weight_version, min_weight_version)

    def add_request(self, request: GenerationRequest) -> list[Sequence]:
        """Validate and queue a request; returns its sequences (one per sample)."""
        self._check_can_generate(request.min_weight_version)
        if request.request_id in self._requests:
            raise AlreadyExists(f"request {request.request_id!r} is still running", field="request_id")
        prompt, resume = checked_tokens(request, self.vocab_size, self.max_context_length)
        options = request.options
        sequences = []
        for i in range(options.n):
            seed = options.seed_of_sample(i)
            generator = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
            sequences.append(
                Sequence(
                    request_id=request.request_id,
                    sample_index=i,
                    prompt_len=len(prompt),
                    resume_len=len(resume),
                    token_ids=prompt + resume,
                    options=options,
                    priority=request.priority,
                    generator=generator,
                )
            )
        assert self.scheduler is not None
        for i, seq in enumerate(sequences):
            self.scheduler.add(seq, waits_for=sequences[0] if i else None)
        self._requests[request.request_id] = _RequestState(request, sequences, time.monotonic())
        return sequences

    def has_request(self, request_id: str) -> bool:
        return request_id in self._requests

    @property
    def has_work(self) -> bool:
        return self.scheduler is not None and self.scheduler.has_work

    # --- the step -------------------------------------------------------------------

    def step(self) -> list[SequenceUpdate]:
        """One forward over the next scheduled batch; returns every update since the last call."""
        assert self.scheduler is not None and self.kv_cache is not None
        batch = self.scheduler.schedule()
        if batch is not None:
            for seq in batch.finished:
                self._emit(seq, [], [])
            if batch.sequences:
                self._run(batch.sequences, batch.is_prefill)
        return self.drain_updates()

    def _run(self, sequences: list[Sequence], is_prefill: bool) -> None:
        assert self.scheduler is not None and self.kv_cache is not None
        if is_prefill:
            for seq in sequences:
                if not seq.prefilled_once:
                    self.prompt_tokens_total += seq.num_tokens
                    self.cached_prompt_tokens_total += seq.cached_prompt_tokens
        logits = self.runner.forward(sequences, self.kv_cache)
        rows = [
            SampleRow(
                seq.options,
                seq.generator,
                self._banned(seq),
            )
            for seq in sequences
        ]
        tokens, logprobs = sample(logits, rows, self.generator)
        now = time.monotonic()
        manager = self.scheduler.block_manager
        for seq, token, logprob in zip(sequences, tokens, logprobs, strict=True):
            manager.register_computed(seq.token_ids, seq.block_table, seq.num_computed_tokens, seq.block_hashes)
            seq.prefilled_once = True
            seq.append(token, logprob, self.weight_version)
            self._note_token(seq, now)
            reason = self._finish_reason(seq)
            if reason is not None:
                self.scheduler.finish(seq, reason)
            self._emit(seq, [token], [logprob])
        self.generated_tokens_total += len(tokens)
        self._recent.append((now, len(tokens)))

    def _banned(self, seq: Sequence) -> tuple[int, ...]:
        if seq.num_generated_total >= seq.options.min_tokens:
            return ()
        return tuple(seq.options.stop_token_ids) + self.eos_token_ids

    def _finish_reason(self, seq: Sequence) -> FinishReason | None:
        token = seq.token_ids[-1]
        options = seq.options
        # Below min_tokens the sampler bans EOS and stop ids, so a sampled one always counts.
        if token in options.stop_token_ids or (not options.ignore_eos and token in self.eos_token_ids):
            seq.matched_stop_token_id = token
            return FinishReason.STOP
        if options.stop_strings and seq.num_generated_total >= options.min_tokens:
            matched = match_stop_string(self.tokenizer, seq.token_ids[seq.prompt_len :], options.stop_strings)
            if matched is not None:
                seq.matched_stop_string = matched
                return FinishReason.STOP
        if options.max_tokens and seq.num_generated_total >= options.max_tokens:
            return FinishReason.LENGTH
        if seq.num_tokens >= self.max_context_length:
            return FinishReason.LENGTH
        return None

    def _note_token(self, seq: Sequence, now: float) -> None:
        state = self._requests[seq.request_id]
        if state.first_token_at is None:
            state.first_token_at = now
            self.observer.first_token(now - state.arrival)

    def _emit(self, seq: Sequence, tokens: list[int], logprobs: list[float]) -> None:
        state = self._requests[seq.request_id]
        text = ""
        if state.request.return_text:
            shown = visible_text(
                self.tokenizer, seq.output_token_ids, seq.options.stop_strings, seq.matched_stop_string or None,
                seq.is_finished,
            )
            text, seq.text_offset = shown[seq.text_offset :], max(seq.text_offset, len(shown))
        update = SequenceUpdate(
            request_id=seq.request_id,
            sample_index=seq.sample_index,
            token_ids=tokens,
            logprobs=logprobs,
            weight_version=self.weight_version,
            text=text,
        )
        if seq.is_finished:
            update.finish_reason = seq.finish_reason
            update.matched_stop_string = seq.matched_stop_string
            update.matched_stop_token_id = seq.matched_stop_token_id
            update.prompt_tokens = seq.prompt_len + seq.resume_len
            update.completion_tokens = len(seq.output_token_ids)
            update.cached_prompt_tokens = seq.cached_prompt_tokens
            self._on_sequence_finished(seq, state)
        self._outbox.append(update)

    def _on_sequence_finished(self, seq: Sequence, state: _RequestState) -> None:
        if seq.finish_reason is not FinishReason.ABORT and state.first_token_at is not None:
            generated = len(seq.output_token_ids)
            if generated > 1:
                self.observer.time_per_output_token((time.monotonic() - state.first_token_at) / (generated - 1))
        if all(s.is_finished for s in state.sequences):
            del self._requests[seq.request_id]
            self.observer.request_finished(seq.finish_reason.value if seq.finish_reason else "")

    def drain_updates(self) -> list[SequenceUpdate]:
        updates, self._outbox = self._outbox, []
        return updates

    # --- abort ----------------------------------------------------------------------

    def abort(self, request_ids: Iterable[str] | None = None) -> tuple[list[PartialOutput], list[str]]:
        """Stop requests (all when ``request_ids`` is None); returns their unfinished samples'
        outputs and the ids that were not running. Streams get a final ABORT update."""
        assert self.scheduler is not None
        ids = list(self._requests) if request_ids is None else list(dict.fromkeys(request_ids))
        partials: list[PartialOutput] = []
        not_running: list[str] = []
        for request_id in ids:
            state = self._requests.get(request_id)
            if state is None:
                not_running.append(request_id)
                continue
            for seq in state.sequences:
                if seq.is_finished:
                    continue
                self.scheduler.finish(seq, FinishReason.ABORT)
                partials.append(
                    PartialOutput(
                        request_id=seq.request_id,
                        sample_index=seq.sample_index,
                        output_token_ids=list(seq.output_token_ids),
                        output_logprobs=list(seq.output_logprobs),
                        version_spans=list(seq.version_spans),
                        prompt_tokens=seq.prompt_len + seq.resume_len,
                        completion_tokens=len(seq.output_token_ids),
                        cached_prompt_tokens=seq.cached_prompt_tokens,
                    )
                )
                self._emit(seq, [], [])
        return partials, not_running

    # --- sleep / wake ---------------------------------------------------------------

    def sleep(self, level: int) -> int:
        """Release device memory; returns the bytes freed. Level 1 keeps the weights in host
        memory (version kept), level 2 drops them (version 0 until the next update). The
        standby parameter set is freed whenever the weights leave the device (level 2, or
        level 1 on an accelerator) and reallocated by the next update."""
        if level not in (1, 2):
            raise InvalidArgument(f"sleep level must be 1 or 2, got {level}", field="level")
        if self.has_work:
            raise FailedPrecondition("requests are running; Abort them (and keep their outputs) before Sleep")
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            raise FailedPrecondition(f"the replica is already asleep ({self.sleep_state.value})")
        freed = self.kv_cache_bytes()
        self.kv_cache, self.scheduler = None, None
        on_device = self.device.type != "cpu"
        if (level == 2 or on_device) and self.standby_weights is not None:
            freed += self.standby_weights.drop()  # scratch: reallocated by the next update
        if level == 1:
            if on_device:
                freed += self.weight_bytes()
                self.model.to("cpu")
            self.sleep_state = SleepState.LEVEL_1
        else:
            freed += self.weight_bytes()
            self.model.to_empty(device="meta")
            self.has_weights = False
            self.weight_version = 0
            self.sleep_state = SleepState.LEVEL_2
        return freed

    def wake_up(self, pools: Seq[MemoryPool] = ()) -> None:
        """Re-allocate weights and/or the KV cache (both when ``pools`` is empty)."""
        wanted = set(pools) or {MemoryPool.WEIGHTS, MemoryPool.KV_CACHE}
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            if self.sleep_state is SleepState.LEVEL_1:
                self.model.to(self.device)
            else:
                self.model.to_empty(device=self.device)
                self.model.tie_weights()
            self.sleep_state = SleepState.WEIGHTS_ONLY
            if MemoryPool.WEIGHTS not in wanted:
                wanted.add(MemoryPool.WEIGHTS)  # the KV cache is only allocated next to weights
        if MemoryPool.KV_CACHE in wanted and self.sleep_state is SleepState.WEIGHTS_ONLY:
            self._allocate_kv_cache()
            self.sleep_state = SleepState.AWAKE

    # --- weights --------------------------------------------------------------------

    def begin_weight_update(self, version: int) -> WeightStager | WeightUpdateOutcome:
        """A stager for ``version``, or the outcome that makes staging unnecessary."""
        skip = unnecessary_update(version, served_version=self.weight_version, has_weights=self.has_weights)
        if skip is not None:
            return skip
        if self.sleep_state in (SleepState.LEVEL_1, SleepState.LEVEL_2):
            self.wake_up([MemoryPool.WEIGHTS])
        return WeightStager(self.model, version, self.standby_weights)

    def commit_weights(self, stager: WeightStager, policy: InFlightPolicy = InFlightPolicy.REFUSE) -> WeightUpdateOutcome:
        """Swap in a fully staged version (call between steps). See ``InFlightPolicy``."""
        if not stager.complete:
            raise LayoutMismatch(f"parameters not covered: {stager.missing()[:5]}")
        if self.has_work:
            if policy is InFlightPolicy.REFUSE:
                return WeightUpdateOutcome.BUSY
            if policy is InFlightPolicy.ABORT:
                self.abort()
            else:
                assert self.scheduler is not None
                self.scheduler.preempt_all()
        stager.swap_into(self.model)
        if self.scheduler is not None:
            self.scheduler.block_manager.flush_prefix_cache()
        self.weight_version = stager.version
        self.has_weights = True
        self.observer.weight_version(stager.version)
        return WeightUpdateOutcome.APPLIED

    def apply_weights(
        self,
        version: int,
        tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
        policy: InFlightPolicy = InFlightPolicy.REFUSE,
    ) -> WeightUpdateOutcome:
        """Stage every tensor of ``version`` and swap it in atomically.

        Layout errors (unknown name, wrong shape, a parameter missing) leave the served
        version untouched and raise ``LayoutMismatch``.
        """
        if self.has_work and policy is InFlightPolicy.REFUSE:
            return WeightUpdateOutcome.BUSY
        begun = self.begin_weight_update(version)
        if isinstance(begun, WeightUpdateOutcome):
            return begun
        try:
            begun.load_all(tensors)
            return self.commit_weights(begun, policy)
        finally:
            begun.close()

    # --- stats ----------------------------------------------------------------------

    def stats(self) -> EngineStats:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent.popleft()
        rate = sum(n for _, n in self._recent) / _RATE_WINDOW_S
        scheduler = self.scheduler
        running = sum(1 for s in self._requests.values() if any(q.status is SequenceStatus.RUNNING for q in s.sequences))
        return EngineStats(
            running_requests=running,
            waiting_requests=len(self._requests) - running,
            kv_cache_usage=scheduler.block_manager.usage if scheduler else 0.0,
            kv_cache_capacity_tokens=self.num_kv_blocks * self.config.block_size if scheduler else 0,
            prompt_tokens_total=self.prompt_tokens_total,
            cached_prompt_tokens_total=self.cached_prompt_tokens_total,
            generated_tokens_total=self.generated_tokens_total,
            generation_tokens_per_second=rate,
            weight_version=self.weight_version,
        )
