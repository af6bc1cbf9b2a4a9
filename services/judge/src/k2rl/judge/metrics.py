"""The judge's own Prometheus series, per verifier and per comparison outcome."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from k2rl.core.metrics import ServiceMetrics

_SCORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True)
class JudgeMetrics:
    latency: Histogram
    verdicts: Counter
    hack_findings: Counter
    comparisons: Counter
    flip_rate: Gauge
    critic_unparseable: Counter
    math_worker_kills: Counter

    @classmethod
    def register(cls, metrics: ServiceMetrics) -> JudgeMetrics:
        return cls(
            latency=metrics.histogram("k2rl_judge_verifier_seconds", "Time to score one response, by verifier.",
                                      ("verifier",), buckets=_SCORE_BUCKETS),
            verdicts=metrics.counter("k2rl_judge_verdicts_total",
                                     "Scored responses by verifier and outcome (passed, failed, hacked, error).",
                                     ("verifier", "outcome")),
            hack_findings=metrics.counter("k2rl_judge_hack_findings_total", "Reward-hacking findings, by kind.",
                                          ("kind",)),
            comparisons=metrics.counter(
                "k2rl_judge_comparisons_total",
                "Pairwise comparisons by outcome: consistent, flipped (orders named different winners), "
                "inconsistent (other disagreement), prechecked (decided without the critic), single_order.",
                ("outcome",)),
            flip_rate=metrics.gauge("k2rl_judge_position_flip_rate",
                                    "Flipped / position-swapped comparisons since start (critic position bias)."),
            critic_unparseable=metrics.counter("k2rl_judge_critic_unparseable_total",
                                               "Critic replies that held no verdict."),
            math_worker_kills=metrics.counter("k2rl_judge_math_worker_kills_total",
                                              "Math workers killed for running past math_timeout_s."),
        )
