"""End-to-end job of the compose `test` profile: exit 0 when the deployed system works.

Reads the same settings as every service (K2RL_DEPENDENCIES for addresses, K2RL_AUTH_TOKEN,
TLS keys) and checks, in order:

1. every service answers grpc health SERVING (waits up to --timeout);
2. the controller's GetSystemStatus sees every other service and the state store serving
   (cross-service calls with the shared token, Redis reachable);
3. the judge scores a code answer through the sandbox (judge -> sandbox -> bubblewrap);
4. inference streams tokens for a prompt;
5. with --prometheus URL: Prometheus scrapes all six services (`up{job="k2rl"}`).

Prints one JSON line of results. Runs in any k2rl image (k2rl-core and k2rl-proto are in
all of them); tests/test_deploy_compose.py runs it against local processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

from k2rl.common.v1 import common_pb2
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.config import SERVICE_NAMES, ServiceSettings, load_settings
from k2rl.core.health import wait_until_serving
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc
from k2rl.sandbox.v1 import sandbox_pb2


def check_health(addresses: dict[str, str], options: ClientOptions, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    status = {}
    for name in SERVICE_NAMES:
        probe = wait_until_serving(name, addresses[name], max(deadline - time.monotonic(), 1.0), options)
        status[name] = probe.status
        if not probe.serving:
            raise SystemExit(_fail(f"{name} at {addresses[name]} not SERVING: {probe.status} {probe.error}"))
    return status


def check_system_status(addresses: dict[str, str], options: ClientOptions) -> int:
    stub = create_stub(controller_pb2_grpc.ControllerServiceStub, addresses["controller"], options)
    try:
        others = [name for name in SERVICE_NAMES if name != "controller"]
        reply = stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(names=[*others, "state_store"]),
                                     timeout=60)
    finally:
        close_stub(stub)
    serving = controller_pb2.HealthStatus.HEALTH_STATUS_SERVING
    down = [f"{d.name}: {controller_pb2.HealthStatus.Name(d.status)} {d.error.message}"
            for d in reply.dependencies if d.status != serving]
    if down or len(reply.dependencies) != len(others) + 1:
        raise SystemExit(_fail(f"controller sees dependencies not serving: {down or list(reply.dependencies)}"))
    return len(reply.dependencies)


def check_code_reward(addresses: dict[str, str], options: ClientOptions) -> float:
    task = judge_pb2.TaskSpec(kind=judge_pb2.TASK_KIND_CODE, task_id="e2e-double", code=judge_pb2.CodeReference(
        language=sandbox_pb2.LANGUAGE_PYTHON,
        tests=[sandbox_pb2.TestCase(name=f"t{n}", stdin=f"{n}\n".encode(), expected_stdout=f"{2 * n}\n".encode())
               for n in (1, 21)]))
    stub = create_stub(judge_pb2_grpc.JudgeServiceStub, addresses["judge"], options)
    try:
        reply = stub.Score(judge_pb2.ScoreRequest(task=task, response="```python\nprint(int(input()) * 2)\n```"),
                           timeout=120)
    finally:
        close_stub(stub)
    if reply.reward != 1.0:
        raise SystemExit(_fail(f"judge gave reward {reply.reward} to a correct program: {reply}"))
    return reply.reward


def check_generation(addresses: dict[str, str], options: ClientOptions) -> int:
    stub = create_stub(inference_pb2_grpc.InferenceServiceStub, addresses["inference"], options)
    request = inference_pb2.GenerateRequest(
        request_id=f"e2e-{time.time_ns()}", prompt_token_ids=inference_pb2.TokenIds(ids=[1, 2, 3, 4]),
        sampling_params=common_pb2.SamplingParams(max_tokens=8, temperature=0.0))
    try:
        replies = list(stub.Generate(request, timeout=120))
    finally:
        close_stub(stub)
    if not replies:
        raise SystemExit(_fail("inference Generate returned an empty stream"))
    return len(replies)


def check_prometheus(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    query = urllib.parse.urlencode({"query": 'sum(up{job="k2rl"})'})
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
                result = json.loads(response.read())["data"]["result"]
            up = int(float(result[0]["value"][1])) if result else 0
            if up == len(SERVICE_NAMES):
                return up
            last = f"{up} of {len(SERVICE_NAMES)} targets up"
        except (OSError, ValueError, KeyError) as error:
            last = str(error)
        time.sleep(2)
    raise SystemExit(_fail(f"Prometheus at {url}: {last}"))


def _fail(message: str) -> int:
    print(json.dumps({"ok": False, "error": message}), flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health / Prometheus")
    parser.add_argument("--prometheus", help="Prometheus base URL to check the scrape targets on")
    args = parser.parse_args(argv)
    settings = load_settings(ServiceSettings, "controller")  # K2RL_DEPENDENCIES, token, TLS
    options = ClientOptions.from_settings(settings)
    addresses = settings.dependencies
    results: dict[str, object] = {"health": check_health(addresses, options, args.timeout)}
    results["controller_sees_serving"] = check_system_status(addresses, options)
    results["code_reward"] = check_code_reward(addresses, options)
    results["generate_stream_messages"] = check_generation(addresses, options)
    if args.prometheus:
        results["prometheus_targets_up"] = check_prometheus(args.prometheus, args.timeout)
    print(json.dumps({"ok": True, **results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
