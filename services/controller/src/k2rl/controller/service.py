"""The controller service: the RL loop, run records and a view of the whole system."""

from __future__ import annotations

from functools import partial

from pydantic import Field, model_validator

from k2rl.controller.run_store import RunStore
from k2rl.controller.runs import RunManager, RunObserver
from k2rl.controller.scheduler.clients import ServiceClients, with_replicas
from k2rl.controller.servicer import ControllerServicer
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions, create_stub
from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.core.store import open_store
from k2rl.models.tokenizer import load_tokenizer


class ControllerSettings(ServiceSettings):
    colocated: bool = Field(True, description="colocated mode: inference sleeps and the trainer offloads each "
                                               "iteration (K2 section 3.3.1); false = disaggregated")
    context_length: int = Field(512, gt=1, description="token budget of an environment that sets none")
    overlap_rollout: bool = Field(True, description="disaggregated mode: roll out iteration n+1 while iteration n "
                                                   "trains; staleness bounded by partial_rollout.max_version_lag")
    inference_replicas: list[str] = Field(
        default_factory=list, description="host:port of every inference replica rollouts are spread over; "
                                          "empty = the dependencies named inference, inference-1, ...")

    @model_validator(mode="after")
    def _replicas_are_dependencies(self) -> ControllerSettings:
        """The replica list replaces the inference* dependencies, so rollouts, Sleep/WakeUp
        and GetSystemStatus all see the same replicas (named inference, inference-1, ...)."""
        if self.inference_replicas:
            self.dependencies = with_replicas(self.dependencies, self.inference_replicas)
        return self


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, ControllerSettings)
    options = ClientOptions.from_settings(settings, context.tracer_provider)
    store = open_store(settings.state_url)
    context.on_shutdown.append(store.close)
    dependencies = {k: v for k, v in settings.dependencies.items() if k != "controller"}
    stub = partial(_stub, options)
    runs = RunManager(RunStore(store), lambda: ServiceClients.connect(dependencies, stub), load_tokenizer,
                      context_length=settings.context_length, colocated=settings.colocated,
                      overlap_rollout=settings.overlap_rollout,
                      observer=PrometheusRunObserver(context),
                      tracer=context.tracer_provider.get_tracer("k2rl.controller"))
    servicer = ControllerServicer(settings, options, runs)
    return [ServicerBinding.generated(controller_pb2, controller_pb2_grpc, "ControllerService", servicer)]


ITERATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class PrometheusRunObserver(RunObserver):
    """Per-phase durations and the last iteration's figures on the controller's /metrics."""

    def __init__(self, context: ServiceContext) -> None:
        metrics = context.metrics
        self.phase_seconds = metrics.histogram(
            "k2rl_controller_phase_seconds", "duration of an RL iteration phase (K2 section 3.3.1)", ("phase",),
            buckets=ITERATION_BUCKETS)
        self.iteration_seconds = metrics.histogram(
            "k2rl_controller_iteration_seconds", "wall time of a whole RL iteration", buckets=ITERATION_BUCKETS)
        self.iterations = metrics.counter("k2rl_controller_iterations", "RL iterations recorded")
        self.iteration = metrics.gauge("k2rl_controller_iteration", "completed iterations of the last run to record one")
        self.weight_version = metrics.gauge("k2rl_controller_weight_version", "weight version after the last iteration")
        self.version_lag = metrics.gauge(
            "k2rl_controller_weight_version_lag",
            "versions between the weights the last rollout sampled from and the weights its iteration produced")
        self.stale_tokens = metrics.gauge(
            "k2rl_controller_stale_token_fraction",
            "fraction of the last iteration's trained tokens sampled from an older weight version (partial rollout)")
        self.reward_mean = metrics.gauge("k2rl_controller_reward_mean", "reward mean of the last iteration",
                                         ("environment",))
        self.reward_std = metrics.gauge("k2rl_controller_reward_std", "reward standard deviation of the last "
                                        "iteration", ("environment",))
        self.pass_rate = metrics.gauge("k2rl_controller_pass_rate", "fraction of the last iteration's trajectories "
                                       "the verifier passed (accuracy)", ("environment",))
        self.response_tokens = metrics.gauge("k2rl_controller_mean_response_tokens", "mean model tokens per "
                                             "trajectory in the last iteration", ("environment",))
        self.rollout_tokens = metrics.counter("k2rl_controller_generated_tokens", "tokens generated by rollouts")
        self.rollout_speed = metrics.gauge("k2rl_controller_rollout_tokens_per_second",
                                           "generated tokens/s over the last rollout phase, all replicas")
        self.trajectories = metrics.counter("k2rl_controller_trajectories", "rollout trajectories by outcome",
                                            ("outcome",))
        self.buffered = metrics.gauge("k2rl_controller_partial_rollouts_buffered",
                                      "paused samples waiting in the partial-rollout buffer")

    def phase_finished(self, phase: int, seconds: float) -> None:
        name = controller_pb2.IterationPhase.Name(phase).removeprefix("ITERATION_PHASE_").lower()
        self.phase_seconds.labels(name).observe(seconds)

    def iteration_finished(self, record: controller_pb2.IterationRecord, run: controller_pb2.Run) -> None:
        self.iterations.inc()
        self.iteration.set(run.completed_iterations)
        self.iteration_seconds.observe((record.end_time.ToNanoseconds() - record.start_time.ToNanoseconds()) / 1e9)
        self.weight_version.set(record.new_weight_version)
        self.version_lag.set(record.new_weight_version - record.rollout_weight_version)
        if record.train_steps:
            self.stale_tokens.set(max(step.rl.stale_token_fraction for step in record.train_steps))
        self.buffered.set(run.partial_rollouts_buffered)
        for env in record.environments:
            self.reward_mean.labels(env.name).set(env.reward_mean)
            self.reward_std.labels(env.name).set(env.reward_std)
            self.pass_rate.labels(env.name).set(env.pass_rate)
            self.response_tokens.labels(env.name).set(env.mean_response_tokens)
        rollout = record.rollout
        self.rollout_tokens.inc(rollout.generated_tokens)
        self.rollout_speed.set(rollout.generation_tokens_per_second)
        for outcome, count in (("finished", rollout.trajectories_finished), ("paused", rollout.trajectories_paused),
                               ("resumed", rollout.trajectories_resumed), ("dropped", rollout.trajectories_dropped)):
            self.trajectories.labels(outcome).inc(count)


def _stub(options: ClientOptions, stub_type: type, address: str) -> object:
    return create_stub(stub_type, address, options)


SERVICE = ServiceSpec("controller", "RL loop, run records and system status", ControllerSettings, build)
