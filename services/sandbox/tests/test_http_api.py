"""SandboxFusion-compatible POST /run_code, called with the request shape verl's sandbox_fusion uses."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request


def _post(sandbox, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(f"{sandbox.http_url}/run_code", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _verl_payload(code: str, language: str = "python", **overrides: object) -> dict:
    # verl/utils/reward_score/sandbox_fusion/utils.py builds exactly these keys.
    return {"compile_timeout": 10, "run_timeout": 10, "code": code, "stdin": "", "memory_limit_MB": 1024,
            "language": language, "files": {}, "fetch_files": [], **overrides}


def test_run_code_success_failure_and_timeout(sandbox) -> None:
    status, body = _post(sandbox, _verl_payload("print(input()[::-1])", stdin="abc"))
    assert status == 200 and body["status"] == "Success"
    assert body["run_result"]["status"] == "Finished" and body["run_result"]["stdout"] == "cba\n"
    assert body["run_result"]["return_code"] == 0 and body["compile_result"] is None
    _, failed = _post(sandbox, _verl_payload("raise ValueError('x')"))
    assert failed["status"] == "Failed" and failed["run_result"]["return_code"] == 1
    assert "ValueError" in failed["run_result"]["stderr"]
    _, slow = _post(sandbox, _verl_payload("while True: pass", run_timeout=1))
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"


def test_run_code_cpp_files_and_fetch_files(sandbox) -> None:
    files = {"data.txt": base64.b64encode(b"5\n").decode()}
    code = ("#include <fstream>\nint main(){std::ifstream in(\"data.txt\");int n;in>>n;"
            "std::ofstream(\"out.txt\")<<n*n;return 0;}")
    _, body = _post(sandbox, _verl_payload(code, "cpp", files=files, fetch_files=["out.txt", "missing.txt"]))
    assert body["status"] == "Success", body
    assert body["compile_result"]["status"] == "Finished"
    assert base64.b64decode(body["files"]["out.txt"]) == b"25" and "missing.txt" not in body["files"]


def test_run_code_rejects_bad_requests(sandbox) -> None:
    assert _post(sandbox, _verl_payload("print(1)", "cobol"))[0] == 422
    assert _post(sandbox, _verl_payload("print(1)", files={"../x": "eA=="}))[0] == 422
    assert _post(sandbox, {"code": 3, "language": "python"})[0] == 422
