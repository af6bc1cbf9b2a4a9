"""Trainer (2 ranks) -> 2 engine workers (gloo) -> 2 replicas with different shard plans, all
real processes on loopback. Replicas are k2rl.checkpoint_engine.reference_replica (k2rl.weights)."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import pytest
import torch

from k2rl.checkpoint_engine.local import cluster, make_params
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.common.v1 import common_pb2
from k2rl.models import build_model, get_preset, save_model
from k2rl.weights import Selector, tensor_bytes

SHARD_0 = [Selector("model.embed_tokens.weight", dim=0, start=0, length=128),
           Selector("model.layers.0.self_attn.q_proj.weight", dim=1, start=0, length=32),
           Selector("lm_head.weight")]
SHARD_1 = [Selector("model.embed_tokens.weight", dim=0, start=128, length=128),
           Selector("model.layers.0.self_attn.q_proj.weight", dim=1, start=32, length=32),
           Selector("model.layers.1.mlp.experts.0.up_proj.weight")]


def _assert_holds(c, name: str, version: int, params) -> None:  # noqa: ANN001
    held_version, tensors = c.held(name)
    assert held_version == version
    expected = c.expected(name, params)
    assert tensors.keys() == expected.keys()
    for key, tensor in expected.items():
        assert tensors[key].dtype == tensor.dtype and torch.equal(tensor_bytes(tensors[key]), tensor_bytes(tensor)), key


@pytest.mark.parametrize("data_path", ["shared_slots", "broadcast"])
def test_versions_reach_every_replica_bit_identical_and_a_restarted_replica_catches_up(tmp_path, data_path) -> None:  # noqa: ANN001
    spans_file = tmp_path / "spans.jsonl"  # the coordinator and both workers append their spans here
    with cluster(tmp_path, data_path=data_path, trace_file=spans_file) as c:
        c.start_replica("r0", SHARD_0)
        c.start_replica("r1", SHARD_1)
        for step in (1, 2):
            params = make_params(seed=step)
            version = c.publish(params, step)
            final = c.wait(version)
            assert final.phase == ce.VERSION_PHASE_COMPLETE, final
            assert (final.replicas_ready, final.replicas_total) == (2, 2)
            _assert_holds(c, "r0", version, params)
            _assert_holds(c, "r1", version, params)
        status = c.stub.GetVersion(ce.GetVersionRequest(), timeout=5)
        assert status.fleet_version == version and status.latest_phase == ce.VERSION_PHASE_COMPLETE

        # kill -9 a replica, restart it empty: the engine pushes the current version (P2P,
        # from its retained copy) without the trainer publishing anything.
        c.kill_replica("r0")
        (c.out / "r0.safetensors").unlink()
        for stager in c.stagers:
            stager.staging.zero_()  # the trainer has moved on: its buffers no longer hold the version
        c.start_replica("r0", SHARD_0)
        final = c.wait(version)
        assert final.phase == ce.VERSION_PHASE_COMPLETE
        _assert_holds(c, "r0", version, params)
    _assert_traced_under_their_publishes([json.loads(line) for line in spans_file.read_text().splitlines()])


def _assert_traced_under_their_publishes(spans: list[dict]) -> None:
    """Each worker's span of a version is a child of the version's PublishVersion call (the
    plan carries its traceparent), with the UpdateWeights push to its replica inside; the
    P2P push to the restarted replica is a trace of its own, linked to the last publish."""
    by_id = {s["span_id"]: s for s in spans}

    def pushes_under(span: dict) -> list[dict]:
        inside = {span["span_id"]} | {s["span_id"] for s in spans if s["parent_span_id"] == span["span_id"]}
        return [s for s in spans if s["kind"] == "CLIENT" and s["name"].endswith("InferenceService/UpdateWeights")
                and s["parent_span_id"] in inside]

    publishes = [s for s in spans if s["kind"] == "SERVER" and s["name"].endswith("/PublishVersion")]
    updates = [s for s in spans if s["name"] == "engine_worker.update"]
    assert len(publishes) == 2 and len(updates) == 2 * 2  # two versions, two workers
    for update in updates:
        publish = by_id.get(update["parent_span_id"])
        assert publish in publishes and update["trace_id"] == publish["trace_id"], update
        assert update["service"] == "k2rl-checkpoint_engine_worker" and update["status"] == "UNSET"
        steps = {s["name"] for s in spans if s["parent_span_id"] == update["span_id"]}
        assert {"engine_worker.gather", "engine_worker.broadcast", "engine_worker.commit"} <= steps, steps
        assert len(pushes_under(update)) == 1  # each worker feeds one of the two replicas
    p2p = [s for s in spans if s["name"] == "engine_worker.p2p"]
    last = {"trace_id": publishes[-1]["trace_id"], "span_id": publishes[-1]["span_id"]}
    assert len(p2p) == 2 and all(s["parent_span_id"] is None and s["links"] == [last] for s in p2p)
    assert sum(len(pushes_under(s)) for s in p2p) == 1  # to the restarted replica


def test_a_corrupted_bucket_is_refused_by_the_replicas_which_keep_the_previous_version(tmp_path) -> None:  # noqa: ANN001
    with cluster(tmp_path, verify_source=False) as c:
        c.start_replica("r0", SHARD_0)
        c.start_replica("r1", SHARD_1)
        good = make_params(seed=1)
        v1 = c.publish(good, 1)
        assert c.wait(v1).phase == ce.VERSION_PHASE_COMPLETE
        v2 = c.publish(make_params(seed=2), 2, corrupt_bucket=1)
        final = c.wait(v2)
        assert final.phase == ce.VERSION_PHASE_FAILED
        assert final.error.code == "WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH" and "bucket 1" in final.error.message
        _assert_holds(c, "r0", v1, good)
        _assert_holds(c, "r1", v1, good)
        status = c.stub.GetVersion(ce.GetVersionRequest(), timeout=5)
        assert status.fleet_version == v1
        assert {r.last_outcome for r in status.replicas} == {common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH}
        # The next clean version goes through.
        v3 = c.publish(make_params(seed=3), 3)
        assert c.wait(v3).phase == ce.VERSION_PHASE_COMPLETE
        _assert_holds(c, "r0", v3, make_params(seed=3))


def test_a_corrupted_source_is_caught_by_the_engine_before_any_replica_sees_it(tmp_path) -> None:  # noqa: ANN001
    with cluster(tmp_path) as c:
        c.start_replica("r0", SHARD_0)
        good = make_params(seed=1)
        v1 = c.publish(good, 1)
        assert c.wait(v1).phase == ce.VERSION_PHASE_COMPLETE
        v2 = c.publish(make_params(seed=2), 2, corrupt_bucket=0)
        final = c.wait(v2)
        assert final.phase == ce.VERSION_PHASE_FAILED and "bucket 0 at its source" in final.error.message
        _assert_holds(c, "r0", v1, good)


def test_a_worker_killed_mid_update_fails_the_version_cleanly_without_hanging(tmp_path) -> None:  # noqa: ANN001
    with cluster(tmp_path, bucket_bytes=4096, collective_timeout_s=5) as c:
        c.start_replica("r0", SHARD_0)
        c.start_replica("r1", SHARD_1)
        good = make_params(seed=1)
        v1 = c.publish(good, 1)
        assert c.wait(v1).phase == ce.VERSION_PHASE_COMPLETE
        big = make_params(seed=2, layers=24, width=256)  # ~hundreds of buckets: the update takes a while
        v2 = c.publish(big, 2)
        for message in c.stub.WaitForVersion(ce.WaitForVersionRequest(min_version=v2), timeout=60):
            if message.phase == ce.VERSION_PHASE_DISTRIBUTING:
                break
        c.workers[1].send_signal(signal.SIGKILL)
        started = time.monotonic()
        final = c.wait(v2, timeout=60)
        assert final.phase == ce.VERSION_PHASE_FAILED, final
        assert final.error.code == "ENGINE_WORKER_FAILED"
        assert c.workers[0].wait(timeout=30) == 3, "the surviving worker exits with its failure code"
        assert time.monotonic() - started < 30
        _assert_holds(c, "r0", v1, good)
        _assert_holds(c, "r1", v1, good)


def test_a_hundred_consecutive_updates_with_the_three_stage_pipeline(tmp_path) -> None:  # noqa: ANN001
    with cluster(tmp_path, pipeline="three_stage") as c:
        c.start_replica("r0", SHARD_0)
        c.start_replica("r1", SHARD_1)
        base = make_params(seed=0, layers=2)
        for step in range(1, 101):
            params = [{k: v + step if v.is_floating_point() else v for k, v in rank.items()} for rank in base]
            version = c.publish(params, step)
            assert version == step
            assert c.wait(version).phase == ce.VERSION_PHASE_COMPLETE, step
        _assert_holds(c, "r0", 100, params)
        _assert_holds(c, "r1", 100, params)


@pytest.mark.parametrize("split", [False, True], ids=["whole_tensors", "split_tensors"])
def test_startup_from_a_checkpoint_on_disk_reads_it_once_and_initialises_replicas(tmp_path, split) -> None:  # noqa: ANN001
    """K2 section 3.3.3: the coordinator plans from the safetensors headers, each worker reads
    only the buckets it owns (of a tensor split over buckets, only its pieces' byte ranges),
    the broadcast gives everyone the rest."""
    model = build_model(get_preset("k2-nano"), seed=3)
    save_model(model, tmp_path / "ckpt", max_shard_bytes=8 << 20)  # several files
    state = {k: v.detach() for k, v in model.state_dict().items()}
    largest = max(t.numel() * t.element_size() for t in state.values())
    bucket_bytes = -(-(largest // 3 if split else largest) // 4096) * 4096
    assert len(list((tmp_path / "ckpt").glob("*.safetensors"))) > 1
    with cluster(tmp_path, bucket_bytes=bucket_bytes) as c:
        c.start_replica("full")
        c.start_replica("embed", [Selector("model.embed_tokens.weight", dim=0, start=0, length=64)])
        published = c.stub.PublishVersion(ce.PublishVersionRequest(
            checkpoint=ce.CheckpointWeightSource(path=str(tmp_path / "ckpt")), version=common_pb2.WeightVersion(trainer_step=0)),
            timeout=30)
        assert published.bucket_count > 2
        final = c.wait(published.version.version)
        assert final.phase == ce.VERSION_PHASE_COMPLETE, final
        _assert_holds(c, "full", published.version.version, [state])
        _assert_holds(c, "embed", published.version.version, [state])
        total = sum(t.numel() * t.element_size() for t in state.values())
        metrics = urllib.request.urlopen(c.metrics_url, timeout=10).read().decode()
        read = float(re.search(r"^k2rl_checkpoint_engine_bytes_gathered_total (\S+)$", metrics, re.M).group(1))
        assert read == total, f"the workers read {read:.0f} bytes of a {total}-byte checkpoint"
