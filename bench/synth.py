"""Agentic data synthesis throughput: trajectories/min at concurrency 1 vs 16.

The whole pipeline (``k2rl.synth.pipeline``: agents and tasks, multi-turn episodes with the
user and tool simulators, judging through a real judge service over gRPC, outputs) runs
against the replay server of ``k2rl.synth.testing`` (a test double that answers every model
call from the demo cassette after ``--latency-ms``, standing in for model time). So the
figures measure the pipeline's own overhead and how well it overlaps calls, not a model.
Both runs use the same tasks; the baseline is concurrency 1 in the same process.

    python bench/synth.py --agents 8 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from k2rl.core.testing import serve_in_process
from k2rl.judge.service import SERVICE as JUDGE
from k2rl.synth.config import SynthConfig
from k2rl.synth.pipeline import SynthPipeline
from k2rl.synth.testing import ReplayServer, replay_server


def _run(concurrency: int, agents: int, replay: ReplayServer, judge_address: str, out: Path) -> dict:
    config = SynthConfig(
        run_id=f"bench-c{concurrency}", out_dir=out / f"c{concurrency}", concurrency=concurrency,
        llm={"base_url": replay.base_url, "model": "replay", "max_concurrency": concurrency},
        tools={"domains": ["weather"]}, agents={"count": agents, "tools_per_agent": 4},
        tasks={"per_agent": 3, "coding_per_agent": 0}, judge={"address": judge_address},
    ).check()
    pipeline = SynthPipeline(config, show_progress=False)
    calls_before = len(replay.requests)
    started = time.perf_counter()
    try:
        summary = asyncio.run(pipeline.run())
    finally:
        pipeline.store.close()
    wall_s = time.perf_counter() - started
    calls = len(replay.requests) - calls_before
    return {"trajectories": summary.trajectories, "kept": summary.kept, "llm_calls": calls, "wall_s": wall_s,
            "trajectories_per_min": summary.trajectories / wall_s * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8, help="agents (3 tool-use tasks each)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="replayed model latency per call")
    args = parser.parse_args()
    with replay_server(latency_s=args.latency_ms / 1000) as replay, tempfile.TemporaryDirectory() as tmp, \
            serve_in_process(JUDGE, critic_base_url=replay.base_url, critic_model="replay", math_workers=1) as judge:
        serial = _run(1, args.agents, replay, judge.settings.address, Path(tmp))
        parallel = _run(16, args.agents, replay, judge.settings.address, Path(tmp))
    assert serial["trajectories"] == parallel["trajectories"], "both runs must roll out the same episodes"
    model_s = serial["llm_calls"] * args.latency_ms / 1000
    print(json.dumps({
        "bench": "synth",
        "replay_latency_ms": args.latency_ms,
        "trajectories": serial["trajectories"],
        "llm_calls": serial["llm_calls"],
        "trajectories_per_min_c1": round(serial["trajectories_per_min"], 1),
        "trajectories_per_min_c16": round(parallel["trajectories_per_min"], 1),
        "speedup_c16_vs_c1": round(parallel["trajectories_per_min"] / serial["trajectories_per_min"], 2),
        # Time per model call beyond the replayed latency, at concurrency 1: the pipeline's own cost
        # (prompting, parsing, simulators, judge gRPC, state-store commits) as a ratio of model time.
        "overhead_vs_model_time_c1": round((serial["wall_s"] - model_s) / model_s, 2),
    }))


if __name__ == "__main__":
    main()
