"""Engine observations (TTFT, TPOT, finished requests, weight version) and their Prometheus form.

The engine reports through ``EngineObserver`` (a no-op by default, so the engine and its
tests need no metrics registry); ``PrometheusObserver`` records into the service's registry.
Gauges that are read off the engine's state (running / waiting requests, KV-cache use,
tokens/s) are refreshed by ``PrometheusObserver.refresh`` from ``Engine.stats()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from k2rl.core.metrics import ServiceMetrics

if TYPE_CHECKING:
    from k2rl.inference.engine import EngineStats

# Seconds; TTFT on CPU spans milliseconds (nano models) to seconds (long prompts).
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class EngineObserver:
    """Receives what the engine measures; the base class ignores it."""

    def first_token(self, seconds: float) -> None:
        """Time from a request's arrival to its first sampled token."""

    def time_per_output_token(self, seconds: float) -> None:
        """Mean time between output tokens of a finished sample."""

    def request_finished(self, finish_reason: str) -> None:
        """A request ended; ``finish_reason`` is that of its last sample."""

    def weight_version(self, version: int) -> None:
        """A new weight version is being served."""


class PrometheusObserver(EngineObserver):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.ttft = metrics.histogram(
            "k2rl_inference_time_to_first_token_seconds", "Arrival to first token.", buckets=TTFT_BUCKETS
        )
        self.tpot = metrics.histogram(
            "k2rl_inference_time_per_output_token_seconds", "Mean inter-token time of a sample.", buckets=TPOT_BUCKETS
        )
        self.finished = metrics.counter(
            "k2rl_inference_requests_finished_total", "Finished requests by finish reason.", ("finish_reason",)
        )
        self.version = metrics.gauge("k2rl_inference_weight_version", "Weight version being served.")
        self.running = metrics.gauge("k2rl_inference_running_requests", "Requests being decoded.")
        self.waiting = metrics.gauge("k2rl_inference_waiting_requests", "Requests queued.")
        self.kv_usage = metrics.gauge("k2rl_inference_kv_cache_usage", "Fraction of KV-cache blocks in use.")
        self.tokens_per_s = metrics.gauge(
            "k2rl_inference_generation_tokens_per_second", "Generated tokens/s over the last seconds."
        )
        self.prefix_hit_rate = metrics.gauge(
            "k2rl_inference_prefix_cache_hit_rate", "Prompt tokens served from the prefix cache / prompt tokens."
        )
        self.generated = metrics.gauge("k2rl_inference_generated_tokens", "Tokens generated since start.")

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def time_per_output_token(self, seconds: float) -> None:
        self.tpot.observe(seconds)

    def request_finished(self, finish_reason: str) -> None:
        self.finished.labels(finish_reason).inc()

    def weight_version(self, version: int) -> None:
        self.version.set(version)

    def refresh(self, stats: EngineStats) -> None:
        self.running.set(stats.running_requests)
        self.waiting.set(stats.waiting_requests)
        self.kv_usage.set(stats.kv_cache_usage)
        self.tokens_per_s.set(stats.generation_tokens_per_second)
        self.version.set(stats.weight_version)
        self.generated.set(stats.generated_tokens_total)
        if stats.prompt_tokens_total:
            self.prefix_hit_rate.set(stats.cached_prompt_tokens_total / stats.prompt_tokens_total)
