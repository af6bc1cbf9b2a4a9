"""The experiment around an RL run (``k2rl run``): pretraining through the trainer service,
publishing its weights to the inference replicas, and held-out evaluation by greedy decoding.

Everything goes through the services' gRPC contracts, as the RL loop does: pretraining is
TrainStep(LOSS_KIND_PRETRAIN) on a generated corpus, the pretrained weights reach inference
through PublishWeights -> checkpoint engine -> UpdateWeights, and evaluation is
Generate(temperature 0) against the replicas on tasks the RL run never prompts
(``TaskSource`` with ``held_out=True``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce_pb2
from k2rl.common.v1 import common_pb2
from k2rl.controller.environments import EnvironmentServices, build_environment
from k2rl.controller.environments.arithmetic import ArithmeticOptions, corpus
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.inference.v1 import inference_pb2
from k2rl.models.tokenizer import Tokenizer
from k2rl.trainer.v1 import trainer_pb2


class PretrainSpec(BaseModel):
    """``pretrain:`` of an experiment YAML: next-token pretraining on the arithmetic corpus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(0, ge=0, description="optimizer steps; 0 = no pretraining")
    documents_per_step: int = Field(64, gt=0, description="worked examples 'a+b=c' per TrainStep")
    seed: int = 0
    options: dict[str, str] = Field(default_factory=dict, description="arithmetic options; default = the run's")


class EvaluationSpec(BaseModel):
    """``evaluation:`` of an experiment YAML: greedy accuracy on held-out tasks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str = Field("arithmetic", description="environment of the run whose held-out tasks are scored")
    tasks: int = Field(200, ge=0, description="held-out tasks; 0 = no evaluation")
    max_tokens: int = Field(0, ge=0, description="0 = the environment's token budget")
    concurrency: int = Field(32, gt=0)


@dataclass(frozen=True)
class PretrainResult:
    steps: int
    final_loss: float
    seconds: float
    trainer_step: int


@dataclass(frozen=True)
class Evaluation:
    tasks: int
    correct: int
    weight_versions: tuple[int, ...]
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks if self.tasks else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "correct": self.correct, "accuracy": self.accuracy,
                "weight_versions": list(self.weight_versions), "seconds": round(self.seconds, 3)}


def _arithmetic_options(config: pb.RunConfig, spec: PretrainSpec) -> ArithmeticOptions:
    options = dict(spec.options)
    if not options:
        env = next((e for e in config.environments if e.name == "arithmetic"), None)
        if env is None:
            raise ValueError("pretraining uses the arithmetic corpus: add the arithmetic environment or set "
                             "pretrain.options")
        options = dict(env.options)
    return ArithmeticOptions.from_options(options, config.seed)


def pretrain_batches(config: pb.RunConfig, spec: PretrainSpec, tokenizer: Tokenizer
                     ) -> Iterator[list[trainer_pb2.TokenSequence]]:
    """``spec.steps`` batches of tokenized worked examples, each document <bos> a+b=c <eos>."""
    options = _arithmetic_options(config, spec)
    eos = tokenizer.stop_token_ids[:1]
    for step in range(spec.steps):
        lines = corpus(options, spec.documents_per_step, seed=spec.seed * 1_000_003 + step)
        yield [trainer_pb2.TokenSequence(token_ids=tokenizer.encode(line, add_special_tokens=True) + eos,
                                         sequence_id=f"pretrain-{step}-{i}") for i, line in enumerate(lines)]


def pretrain(clients: ServiceClients, config: pb.RunConfig, spec: PretrainSpec, tokenizer: Tokenizer,
             on_step: Callable[[int, float], None] = lambda step, loss: None,
             rpc_timeout_s: float = 600.0) -> PretrainResult:
    """TrainStep(PRETRAIN) ``spec.steps`` times, each with ``expected_step`` so nothing runs twice."""
    started = time.perf_counter()
    trainer = clients.trainer
    trainer.Onload(trainer_pb2.OnloadRequest(), timeout=rpc_timeout_s)
    step = trainer.GetState(trainer_pb2.GetStateRequest(), timeout=30).step
    loss = float("nan")
    for index, sequences in enumerate(pretrain_batches(config, spec, tokenizer)):
        request = trainer_pb2.TrainStepRequest(
            config=trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN, expected_step=step),
            sequences=sequences)
        metrics = trainer.TrainStep(iter([request]), timeout=rpc_timeout_s).metrics
        step, loss = metrics.step, metrics.lm_loss
        on_step(index + 1, loss)
    return PretrainResult(spec.steps, loss, time.perf_counter() - started, step)


def publish_and_wait(clients: ServiceClients, timeout_s: float = 300.0) -> int:
    """Hand the trainer's current weights to every replica; returns the version they serve."""
    version = clients.trainer.PublishWeights(trainer_pb2.PublishWeightsRequest(), timeout=timeout_s).version.version
    last = None
    for last in clients.checkpoint_engine.WaitForVersion(ce_pb2.WaitForVersionRequest(min_version=version),
                                                         timeout=timeout_s):
        if last.phase == ce_pb2.VERSION_PHASE_FAILED:
            raise RuntimeError(f"weight version {version} failed: {last.error.code}: {last.error.message}")
    if last is None or last.phase != ce_pb2.VERSION_PHASE_COMPLETE:
        raise RuntimeError(f"weight version {version} did not complete")
    return version


def evaluate(clients: ServiceClients, config: pb.RunConfig, spec: EvaluationSpec, tokenizer: Tokenizer,
             rpc_timeout_s: float = 120.0) -> Evaluation:
    """Greedy accuracy on ``spec.tasks`` held-out tasks, spread over the replicas."""
    env_spec = next((e for e in config.environments if e.name == spec.environment), None)
    if env_spec is None:
        raise ValueError(f"evaluation environment {spec.environment!r} is not one of the run's environments")
    setup = build_environment(env_spec.name, dict(env_spec.options), env_spec.dataset, config.seed,
                              EnvironmentServices(judge=clients.judge, sandbox=clients.sandbox))
    held_out = setup.held_out
    if held_out is None:
        raise ValueError(f"environment {spec.environment!r} has no held-out task stream")
    started = time.perf_counter()
    for _, replica in clients.replicas:  # the colocated loop leaves replicas with weights only
        replica.WakeUp(inference_pb2.WakeUpRequest(), timeout=rpc_timeout_s)
    max_tokens = spec.max_tokens or env_spec.token_budget or 64
    stops = list(tokenizer.stop_token_ids)
    tag = random.Random().getrandbits(32)

    def score(index: int) -> tuple[bool, set[int]]:
        task = held_out.task(index)
        environment = setup.new_episode()
        prompt = environment.reset(task)
        request = inference_pb2.GenerateRequest(
            request_id=f"eval-{tag:08x}-{index}",
            prompt_token_ids=inference_pb2.TokenIds(ids=tokenizer.encode(prompt, add_special_tokens=True)),
            sampling_params=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=stops))
        _, replica = clients.replicas[index % len(clients.replicas)]
        chunks = list(replica.Generate(request, timeout=rpc_timeout_s))
        tokens = [t for c in chunks for t in c.token_ids if t not in stops]
        result = environment.step(tokenizer.decode(tokens))
        return result.passed, {c.weight_version for c in chunks}

    with ThreadPoolExecutor(spec.concurrency) as pool:
        results = list(pool.map(score, range(spec.tasks)))
    versions = set().union(*(v for _, v in results)) if results else set()
    return Evaluation(spec.tasks, sum(ok for ok, _ in results), tuple(sorted(versions)), time.perf_counter() - started)
