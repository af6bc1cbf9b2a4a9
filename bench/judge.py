"""Judge scoring throughput over gRPC, per verifier family, on an in-process judge.

Prints one JSON line. For each family, one ScoreBatch of ``--items`` responses (half
correct) is timed after a warm-up batch; the figures are items/s and the per-item
``latency_ms`` percentiles the judge reports. ``math_pathological`` mixes one answer that
makes sympy spin (9^9^9^9^9) into every 16 math items, showing what killed workers cost.
Code rewards need a sandbox and critic rankings a model; neither is benchmarked here.

    python bench/judge.py --items 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import serve_in_process
from k2rl.judge.service import SERVICE
from k2rl.judge.v1 import judge_pb2 as pb
from k2rl.judge.v1 import judge_pb2_grpc


def _math(i: int) -> pb.ScoreRequest:
    answer = f"\\frac{{{i}}}{{{i + 1}}}"
    response = f"so \\boxed{{{answer if i % 2 else i / (i + 1) + 0.1}}}"
    return pb.ScoreRequest(
        task=pb.TaskSpec(kind=pb.TASK_KIND_MATH, math=pb.MathReference(answer=answer)),
        response=response,
    )


def _pathological(i: int) -> pb.ScoreRequest:
    if i % 16:
        return _math(i)
    return pb.ScoreRequest(
        task=pb.TaskSpec(kind=pb.TASK_KIND_MATH, math=pb.MathReference(answer="1")),
        response=r"\boxed{9^{9^{9^{9^{9}}}}}",
    )


def _instruction(i: int) -> pb.ScoreRequest:
    constraints = [
        pb.InstructionConstraint(
            checker="length_constraints:number_words",
            arguments_json='{"relation": "less than", "num_words": 60}',
        ),
        pb.InstructionConstraint(
            checker="keywords:existence", arguments_json='{"keywords": ["judge"]}'
        ),
        pb.InstructionConstraint(checker="punctuation:no_comma"),
    ]
    words = 40 if i % 2 else 80
    return pb.ScoreRequest(
        task=pb.TaskSpec(
            kind=pb.TASK_KIND_INSTRUCTION_FOLLOWING,
            instruction=pb.InstructionReference(constraints=constraints),
        ),
        response=" ".join(["the judge scores"] * (words // 3)),
    )


def _game24(i: int) -> pb.ScoreRequest:
    puzzle = pb.PuzzleReference(game24=pb.Game24Puzzle(numbers=[4, 7, 8, 8]))
    return pb.ScoreRequest(
        task=pb.TaskSpec(kind=pb.TASK_KIND_LOGIC_PUZZLE, puzzle=puzzle),
        response="(7 - 8/8) * 4" if i % 2 else "(7 - 8/8) * 3",
    )


FAMILIES = {
    "math": _math,
    "math_pathological": _pathological,
    "instruction": _instruction,
    "game24": _game24,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--math-workers", type=int, default=2)
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with serve_in_process(SERVICE, math_workers=args.math_workers, math_timeout_s=2.0) as runtime:
        stub = create_stub(
            judge_pb2_grpc.JudgeServiceStub, runtime.settings.address, ClientOptions(max_attempts=1)
        )
        try:
            for name, make in FAMILIES.items():
                stub.ScoreBatch(
                    pb.ScoreBatchRequest(requests=[make(i) for i in range(16)]), timeout=600
                )
                batch = pb.ScoreBatchRequest(requests=[make(i) for i in range(args.items)])
                started = time.perf_counter()
                reply = stub.ScoreBatch(batch, timeout=600)
                elapsed = time.perf_counter() - started
                latencies = sorted(r.latency_ms for r in reply.responses)
                figures[name] = {
                    "items_per_s": round(args.items / elapsed, 1),
                    "latency_p50_ms": round(statistics.median(latencies), 2),
                    "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
                    "pass_rate": round(sum(r.passed for r in reply.responses) / args.items, 3),
                    "errors": sum(r.HasField("error") for r in reply.responses),
                }
        finally:
            close_stub(stub)
    print(
        json.dumps(
            {"bench": "judge", "items": args.items, "math_workers": args.math_workers, **figures}
        )
    )


if __name__ == "__main__":
    main()
