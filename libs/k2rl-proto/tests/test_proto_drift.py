"""The committed generated code is exactly what protos/ generates (DESIGN.md section 1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[3]
GEN_PROTOS = REPO_ROOT / "scripts" / "gen_protos.py"
SRC = REPO_ROOT / "libs" / "k2rl-proto" / "src"


def _run_check(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN_PROTOS), "--check", *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_committed_code_matches_protos() -> None:
    result = _run_check()
    assert result.returncode == 0, (
        "libs/k2rl-proto/src is out of date with protos/: run `make protos` and commit the "
        f"result.\n{result.stdout}{result.stderr}"
    )


def test_check_reports_changed_missing_and_unexpected_files(tmp_path: Path) -> None:
    """--check must fail, and say how, on each kind of drift; otherwise the test above
    would pass vacuously."""
    out = tmp_path / "src"
    shutil.copytree(SRC / "k2rl", out / "k2rl", ignore=shutil.ignore_patterns("__pycache__"))
    changed = out / "k2rl/trainer/v1/trainer_pb2.pyi"
    changed.write_text(changed.read_text() + "\n# hand edit\n")
    (out / "k2rl/judge/v1/judge_pb2_grpc.py").unlink()
    (out / "k2rl/__init__.py").write_text("")  # would break the namespace package

    result = _run_check("--out", str(out))

    assert result.returncode == 1, result.stdout + result.stderr
    report = result.stderr
    assert "changed:    k2rl/trainer/v1/trainer_pb2.pyi" in report
    assert "+# hand edit" not in report and "-# hand edit" in report  # diff direction
    assert "missing:    k2rl/judge/v1/judge_pb2_grpc.py" in report
    assert "unexpected: k2rl/__init__.py" in report
    assert "make protos" in report


def test_check_passes_on_a_fresh_copy(tmp_path: Path) -> None:
    out = tmp_path / "src"
    shutil.copytree(SRC / "k2rl", out / "k2rl", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "k2rl/trainer/v1/__pycache__").mkdir()
    (out / "k2rl/trainer/v1/__pycache__/trainer_pb2.cpython-311.pyc").write_bytes(b"\0")
    result = _run_check("--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generation_is_deterministic(gen_protos: ModuleType, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    gen_protos.generate(REPO_ROOT / "protos", first)
    gen_protos.generate(REPO_ROOT / "protos", second)
    assert gen_protos.snapshot(first) == gen_protos.snapshot(second)


def test_regeneration_rewrites_drift_and_deletes_stale_files(
    gen_protos: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "src"
    shutil.copytree(SRC / "k2rl", out / "k2rl", ignore=shutil.ignore_patterns("__pycache__"))
    stale = out / "k2rl/removed/v1/removed_pb2.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# from a proto that no longer exists\n")
    edited = out / "k2rl/common/v1/common_pb2.py"
    edited.write_text("# clobbered\n")

    written, deleted = gen_protos.sync(REPO_ROOT / "protos", out)

    assert written == ["k2rl/common/v1/common_pb2.py"]
    assert deleted == ["k2rl/removed/v1/removed_pb2.py"]
    assert not (out / "k2rl/removed").exists()
    assert gen_protos.check(REPO_ROOT / "protos", out) == []


def test_namespace_levels_have_no_init() -> None:
    """k2rl and k2rl.<svc> are shared with the service distributions (PEP 420); an
    __init__.py there would hide services/<svc>/src/k2rl/<svc> from imports."""
    base = SRC / "k2rl"
    assert not (base / "__init__.py").exists()
    packages = sorted(p for p in base.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert packages, f"nothing generated under {base}: run `make protos`"
    for package in packages:
        assert not (package / "__init__.py").exists(), f"{package} must stay a namespace"
        assert (package / "v1" / "__init__.py").is_file(), f"{package}/v1 needs __init__.py"
