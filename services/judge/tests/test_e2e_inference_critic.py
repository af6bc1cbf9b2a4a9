"""Self-critique rubric reward end to end with the policy as its own critic (K2 §3.2.2): the
judge and the real inference service running k2-nano as separate processes (``LocalCluster``),
the judge's ``critic_base_url`` pointing at the inference service's OpenAI-compatible HTTP API.

Only mechanics are asserted (k2-nano is random-init, its verdicts are garbage): each order of
each comparison reaches the critic as one chat completion (counted by the inference service's
``k2rl_inference_requests_finished_total``), the judge survives whatever comes back (unparseable
replies become ties and are counted), both orders are judged, and every response gets a
well-formed reward. k2-nano's context is 2048 byte tokens, so the rubrics here are short; K2's
Appendix F set does not fit it (see the last test)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from k2rl.core.client import close_stub, create_stub
from k2rl.core.launcher import LocalCluster
from k2rl.core.net import free_loopback_ports
from k2rl.judge.v1 import judge_pb2 as pb
from k2rl.judge.v1 import judge_pb2_grpc

pytestmark = pytest.mark.slow

MAX_TOKENS = 32  # critic completion length: keeps a CPU run short
RUBRICS = [
    pb.Rubric(name="clarity", kind=pb.RUBRIC_KIND_CORE, criterion="Answers the question directly and clearly."),
    pb.Rubric(name="no_initial_praise", kind=pb.RUBRIC_KIND_PRESCRIPTIVE, mandatory=True,
              criterion="Does not open by praising the question."),
    pb.Rubric(name="units", kind=pb.RUBRIC_KIND_TASK_SPECIFIC, weight=2.0, criterion="States the unit (km)."),
]
PROMPT = "How far is it from Paris to Lyon?"
SAMPLES = ["About 390 km by road.", "Roughly 465 km.", "It is far; take the train."]
PREFERENCES = {pb.PREFERENCE_RESPONSE_A, pb.PREFERENCE_RESPONSE_B, pb.PREFERENCE_TIE}
SWAPPED_OUTCOMES = ("consistent", "flipped", "inconsistent")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory: Path = tmp_path_factory.mktemp("critic_e2e")
    (http_port,) = free_loopback_ports(1)
    config = directory / "services.yaml"
    config.write_text(yaml.safe_dump({
        "inference": {"model": "k2-nano", "http_port": http_port, "max_running_requests": 8},
        "judge": {"critic_base_url": f"http://127.0.0.1:{http_port}/v1", "critic_model": "k2-nano",
                  "critic_max_tokens": MAX_TOKENS, "critic_timeout_s": 60, "math_workers": 1},
    }))
    with LocalCluster(("inference", "judge"), config_file=config, free_ports=True,
                      log_dir=directory / "logs").serving(90) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def judge(cluster: LocalCluster) -> Iterator[judge_pb2_grpc.JudgeServiceStub]:
    stub = create_stub(judge_pb2_grpc.JudgeServiceStub, cluster.settings["judge"].address, cluster.client_options())
    yield stub
    close_stub(stub)


def _scrape(cluster: LocalCluster, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = cluster.settings[service].prometheus_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


class Delta:
    """Counter increases across a block, read from both services' /metrics."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def __enter__(self) -> Delta:
        self.before = {s: _scrape(self.cluster, s) for s in ("inference", "judge")}
        return self

    def __exit__(self, *exc: object) -> None:
        self.after = {s: _scrape(self.cluster, s) for s in ("inference", "judge")}

    def __call__(self, service: str, name: str, **labels: str) -> float:
        return _total(self.after[service], name, **labels) - _total(self.before[service], name, **labels)

    def critic_calls(self) -> float:
        return self("inference", "k2rl_inference_requests_finished_total")

    def comparisons(self, outcome: str) -> float:
        return self("judge", "k2rl_judge_comparisons_total", outcome=outcome)


def _check_compare(reply: pb.CompareResponse, unparseable: float, calls: int) -> None:
    assert reply.preference in PREFERENCES
    assert 0.0 <= reply.probability_a_better <= 1.0
    assert reply.critic == "k2-nano"
    assert reply.latency_ms > 0
    assert [v.rubric_name for v in reply.verdicts] == [r.name for r in RUBRICS]
    assert [v.kind for v in reply.verdicts] == [r.kind for r in RUBRICS]
    assert 0 <= unparseable <= calls
    if unparseable == calls:  # garbage in every order: no information, a tie
        assert (reply.preference, reply.probability_a_better) == (pb.PREFERENCE_TIE, 0.5)
        assert reply.position_consistent is False
    if reply.preference == pb.PREFERENCE_TIE:
        assert reply.probability_a_better == 0.5 or not reply.position_consistent or calls == 1


def test_compare_with_position_swap_asks_k2_nano_in_both_orders(
        cluster: LocalCluster, judge: judge_pb2_grpc.JudgeServiceStub) -> None:
    request = pb.CompareRequest(prompt=PROMPT, response_a=SAMPLES[0], response_b=SAMPLES[1], rubrics=RUBRICS,
                                position_swap=True)
    with Delta(cluster) as delta:
        reply = judge.Compare(request, timeout=60)
    assert delta.critic_calls() == 2  # both orders reached the critic
    assert sum(delta.comparisons(o) for o in SWAPPED_OUTCOMES) == 1
    unparseable = delta("judge", "k2rl_judge_critic_unparseable_total")
    _check_compare(reply, unparseable, calls=2)
    if unparseable:  # one or both orders unreadable: never a decided, consistent verdict from it
        assert not reply.position_consistent


def test_compare_in_one_order_asks_once(cluster: LocalCluster, judge: judge_pb2_grpc.JudgeServiceStub) -> None:
    request = pb.CompareRequest(prompt=PROMPT, response_a=SAMPLES[1], response_b=SAMPLES[2], rubrics=RUBRICS)
    with Delta(cluster) as delta:
        reply = judge.Compare(request, timeout=60)
    assert delta.critic_calls() == 1
    assert delta.comparisons("single_order") == 1
    _check_compare(reply, delta("judge", "k2rl_judge_critic_unparseable_total"), calls=1)


def test_rubric_ranking_of_k_samples_rewards_every_sample(
        cluster: LocalCluster, judge: judge_pb2_grpc.JudgeServiceStub) -> None:
    task = pb.TaskSpec(kind=pb.TASK_KIND_RUBRIC, task_id="paris-lyon", prompt=PROMPT,
                       rubric=pb.RubricReference(rubrics=RUBRICS))
    batch = pb.ScoreBatchRequest(requests=[pb.ScoreRequest(task=task, response=s) for s in SAMPLES])
    with Delta(cluster) as delta:
        reply = judge.ScoreBatch(batch, timeout=60)
    k = len(SAMPLES)
    pairs = k * (k - 1) // 2
    assert delta.critic_calls() == 2 * pairs  # every pair judged in both orders (rank_position_swap)
    assert sum(delta.comparisons(o) for o in SWAPPED_OUTCOMES) == pairs
    unparseable = delta("judge", "k2rl_judge_critic_unparseable_total")
    assert 0 <= unparseable <= 2 * pairs
    assert len(reply.responses) == k
    for index, item in enumerate(reply.responses):
        assert not item.HasField("error"), item.error
        assert 0.0 <= item.reward <= 1.0
        assert item.passed is (item.reward > 0.5)
        assert sorted(c.name for c in item.checks) == sorted(f"vs sample {j}" for j in range(k) if j != index)
        assert all(0.0 <= c.score <= 1.0 for c in item.checks)
    # Bradley-Terry reward = mean P(beats each other sample): P(i>j) + P(j>i) = 1, so they sum to K/2
    assert sum(item.reward for item in reply.responses) == pytest.approx(k / 2, abs=1e-6)
    if unparseable == 2 * pairs:  # nothing readable (what random-init k2-nano writes): all ties
        assert [item.reward for item in reply.responses] == pytest.approx([0.5] * k)
        assert all("orders disagreed" in c.detail for item in reply.responses for c in item.checks)


def test_default_rubrics_overflow_k2_nano_context_as_unavailable_not_a_crash(
        cluster: LocalCluster, judge: judge_pb2_grpc.JudgeServiceStub) -> None:
    # K2's Appendix F rubrics make a ~3 kB prompt: more than k2-nano's 2048 byte tokens. The
    # endpoint refuses it; the judge reports UNAVAILABLE and keeps serving.
    with pytest.raises(grpc.RpcError) as raised:
        judge.Compare(pb.CompareRequest(prompt=PROMPT, response_a=SAMPLES[0], response_b=SAMPLES[1],
                                        position_swap=True), timeout=60)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "k2-nano" in (raised.value.details() or "") and "context" in (raised.value.details() or "")
    reply = judge.Compare(pb.CompareRequest(prompt=PROMPT, response_a=SAMPLES[0], response_b=SAMPLES[2],
                                            rubrics=RUBRICS), timeout=60)
    assert reply.preference in PREFERENCES
