"""What a verifier returns: a reward with the checks behind it, free of gRPC types."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """One check behind a reward (a unit test, a constraint, a puzzle rule)."""

    name: str
    passed: bool
    detail: str = ""
    score: float | None = None  # graded checks; None = 1.0 if passed else 0.0
    weight: float = 1.0

    @property
    def value(self) -> float:
        return self.score if self.score is not None else float(self.passed)


@dataclass(frozen=True)
class HackFinding:
    """A sign of reward hacking; any finding zeroes the reward."""

    kind: str
    detail: str


@dataclass(frozen=True)
class ScoringError:
    """The response could not be scored (dependency down, timeout): not the model's fault."""

    code: str
    message: str
    retryable: bool = True
    hint: str = ""


@dataclass
class Verdict:
    """A verifier's result. ``reward`` is in [0, 1] unless the verifier documents otherwise."""

    verifier: str
    reward: float
    passed: bool
    checks: list[Check] = field(default_factory=list)
    hack_findings: list[HackFinding] = field(default_factory=list)
    error: ScoringError | None = None
    latency_ms: float = 0.0

    @classmethod
    def from_checks(cls, verifier: str, checks: list[Check]) -> Verdict:
        """All-or-nothing pass, reward = weighted mean of the checks' scores."""
        total = sum(c.weight for c in checks)
        reward = sum(c.value * c.weight for c in checks) / total if total > 0 else 0.0
        return cls(verifier, reward, bool(checks) and all(c.passed for c in checks), checks)

    @classmethod
    def failed(cls, verifier: str, name: str, detail: str) -> Verdict:
        return cls(verifier, 0.0, False, [Check(name, False, detail)])

    @classmethod
    def unscored(cls, verifier: str, error: ScoringError) -> Verdict:
        return cls(verifier, 0.0, False, error=error)

    def penalise(self, findings: list[HackFinding]) -> None:
        """Reward hacking found: reward 0, not passed (judge.proto, ScoreResponse.hack_findings)."""
        if findings:
            self.hack_findings.extend(findings)
            self.reward = 0.0
            self.passed = False
