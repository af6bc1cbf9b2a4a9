"""The GitHub Actions workflows are valid, complete, and call what exists.

GitHub is not reachable from here, so the workflows cannot run; these checks stand in:

* every workflow validates against the GitHub workflow JSON schema (check-jsonschema's
  vendored copy, no network);
* every lib and service has its workflow (`lib-<name>.yml`, `service-<name>.yml`) with path
  filters that fire on its own folder, the libs, the contracts and the build inputs, and no
  workflow is left behind for a component that no longer exists;
* every `make <target>` a workflow runs is a phony target of the Makefile with a recipe;
* every system package the tests it runs ask for (`k2rl.core.testing.require_binary`) is
  installed by the workflow, so CI (where a missing binary fails instead of skipping) passes;
* actions are pinned to a major version, jobs have timeouts, Python is 3.11.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
TESTING_MODULE = REPO / "libs" / "k2rl-core" / "src" / "k2rl" / "core" / "testing.py"

# Binaries GitHub's ubuntu-24.04 image already provides, and the env var a workflow must set
# to use it: `bazel` there is bazelisk, which downloads whatever USE_BAZEL_VERSION names.
RUNNER_PROVIDED = {"bazel": "USE_BAZEL_VERSION"}
ACTION_PIN = re.compile(r"^[\w.-]+/[\w./-]+@v\d+$")


def _component_dirs(parent: str) -> list[Path]:
    return sorted(
        path
        for path in (REPO / parent).iterdir()
        if path.is_dir() and not path.name.startswith((".", "_")) and path.name != "__pycache__"
    )


LIBS = _component_dirs("libs")
SERVICES = _component_dirs("services")
COMPONENTS = LIBS + SERVICES


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _workflow_file(component: Path) -> Path:
    prefix = "service" if component.parent.name == "services" else "lib"
    return WORKFLOWS_DIR / f"{prefix}-{component.name}.yml"


# --- reading workflows -----------------------------------------------------------------------


@cache
def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{_rel(path)} is not a YAML mapping"
    return doc


def _triggers(doc: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    triggers = doc.get("on", doc.get(True))
    if isinstance(triggers, str):
        return {triggers: None}
    if isinstance(triggers, list):
        return dict.fromkeys(triggers)
    return triggers or {}


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc.get("jobs", {}).values() for step in job.get("steps", [])]


def _run_commands(doc: dict[str, Any]) -> list[list[str]]:
    """Simple commands of all `run:` steps as token lists, split at ; && || | and newlines."""
    commands = []
    for step in _steps(doc):
        for line in step.get("run", "").replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in {";", "&&", "||", "|", "&"}:
                    if command and command[0] == "sudo":
                        command = command[1:]
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(token)
    return commands


def _make_targets(doc: dict[str, Any]) -> list[str]:
    targets = []
    for tokens in _run_commands(doc):
        if tokens[0] == "make":
            targets += [tok for tok in tokens[1:] if not tok.startswith("-") and "=" not in tok]
    return targets


def _apt_installed(doc: dict[str, Any]) -> set[str]:
    packages: set[str] = set()
    for tokens in _run_commands(doc):
        if tokens[0] in {"apt-get", "apt"} and "install" in tokens:
            after = tokens[tokens.index("install") + 1 :]
            packages |= {tok for tok in after if not tok.startswith("-")}
    return packages


def _env_vars(doc: dict[str, Any]) -> set[str]:
    names = set(doc.get("env") or {})
    for job in doc.get("jobs", {}).values():
        names |= set(job.get("env") or {})
        for step in job.get("steps", []):
            names |= set(step.get("env") or {})
    return names


# --- what the Makefile and the tests need ----------------------------------------------------


@cache
def _makefile_phony_targets() -> frozenset[str]:
    database = subprocess.run(
        ["make", "--no-print-directory", "-pq"], cwd=REPO, capture_output=True, text=True
    ).stdout
    phony = [line for line in database.splitlines() if line.startswith(".PHONY:")]
    assert phony, "make -pq printed no .PHONY line; is the Makefile readable?"
    return frozenset(phony[0].split(":", 1)[1].split())


def _binary_requirements(tree: ast.AST) -> set[tuple[str, str]]:
    """(binary, apt package) of every `require_binary("x", "pkg")` call with literal arguments."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "require_binary" or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        binary = node.args[0].value
        package = binary
        if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            package = node.args[1].value
        for kw in node.keywords:
            if kw.arg == "apt_package" and isinstance(kw.value, ast.Constant):
                package = kw.value.value
        found.add((binary, package))
    return found


@cache
def _testing_helpers() -> dict[str, frozenset[tuple[str, str]]]:
    """k2rl.core.testing functions (helpers and fixtures) -> binaries they require, transitively."""
    tree = ast.parse(TESTING_MODULE.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    needs = {name: _binary_requirements(fn) for name, fn in functions.items()}
    calls = {
        name: {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in functions}
        for name, fn in functions.items()
    }
    changed = True
    while changed:
        changed = False
        for name in functions:
            for callee in calls[name]:
                if not needs[callee] <= needs[name]:
                    needs[name] |= needs[callee]
                    changed = True
    return {name: frozenset(req) for name, req in needs.items() if req and name != "require_binary"}


def _binaries_needed(test_dirs: list[Path]) -> dict[tuple[str, str], list[str]]:
    """(binary, apt package) -> test files that need it, for the tests in test_dirs.

    Counts direct require_binary calls and any use (call, import, fixture argument) of a
    k2rl.core.testing helper that requires a binary.
    """
    helpers = _testing_helpers()
    needed: dict[tuple[str, str], list[str]] = {}
    for test_dir in test_dirs:
        for path in sorted(test_dir.rglob("*.py")) if test_dir.is_dir() else []:
            tree = ast.parse(path.read_text(), filename=str(path))
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
            names |= {
                a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
            }
            requirements = set(_binary_requirements(tree))
            for helper in names & helpers.keys():
                requirements |= helpers[helper]
            for requirement in requirements:
                needed.setdefault(requirement, []).append(_rel(path))
    return needed


def _test_dirs_run_by(target: str) -> list[Path]:
    """Directories whose tests `make <target>` runs (mirrors the Makefile's test rules)."""
    if target == "test":
        return [component / "tests" for component in COMPONENTS] + [REPO / "tests"]
    if target == "test-integration":
        return [REPO / "tests"]
    for component in COMPONENTS:
        if target == f"test-{component.name}":
            return [component / "tests"]
    return []


# --- GitHub path-filter semantics ------------------------------------------------------------


def _filter_regex(pattern: str) -> re.Pattern[str]:
    if any(ch in pattern for ch in "?+[]"):
        raise AssertionError(f"path filter {pattern!r}: only * and ** are supported by this check")
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join({"**": ".*", "*": "[^/]*"}.get(part, re.escape(part)) for part in parts)
    return re.compile(regex + r"\Z")


def _filter_fires(patterns: list[str], path: str) -> bool:
    """GitHub `paths:` semantics: the last matching pattern wins; `!` negates."""
    fires = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _filter_regex(pattern.removeprefix("!")).match(path):
            fires = not negated
    return fires


# --- tests -----------------------------------------------------------------------------------


def test_workflows_exist() -> None:
    assert WORKFLOWS, f"no workflows under {_rel(WORKFLOWS_DIR)}"
    assert (WORKFLOWS_DIR / "integration.yml").is_file(), "integration.yml (make test) is missing"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_github_schema(workflow: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"{_rel(workflow)}:\n{result.stdout}{result.stderr}")


@pytest.mark.parametrize("component", COMPONENTS, ids=_rel)
def test_component_has_workflow(component: Path) -> None:
    workflow = _workflow_file(component)
    assert workflow.is_file(), (
        f"{_rel(component)} has no CI workflow; add {_rel(workflow)} (copy a sibling's)"
    )
    assert f"test-{component.name}" in _make_targets(_load(workflow)), (
        f"{_rel(workflow)} must run `make test-{component.name}`"
    )


@pytest.mark.parametrize("component", COMPONENTS, ids=_rel)
def test_component_workflow_has_tests_to_run(component: Path) -> None:
    tests = sorted((component / "tests").rglob("test_*.py"))
    assert tests, (
        f"`make test-{component.name}` runs pytest on {_rel(component)}/tests, which holds no "
        f"test_*.py; its workflow would fail (pytest exits 4 or 5)"
    )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_belongs_to_a_component(workflow: Path) -> None:
    owners = {_workflow_file(component) for component in COMPONENTS}
    assert workflow.name == "integration.yml" or workflow in owners, (
        f"{_rel(workflow)} is neither integration.yml nor the workflow of an existing lib or "
        f"service (lib-<dir>.yml / service-<dir>.yml)"
    )


@pytest.mark.parametrize("component", COMPONENTS, ids=_rel)
def test_component_workflow_path_filters(component: Path) -> None:
    workflow = _workflow_file(component)
    if not workflow.is_file():
        pytest.fail(f"{_rel(workflow)} is missing (see test_component_has_workflow)")
    triggers = _triggers(_load(workflow))
    must_fire_for = [
        f"{_rel(component)}/src/k2rl/module.py",
        f"{_rel(component)}/tests/test_module.py",
        *(f"{_rel(lib)}/src/k2rl/module.py" for lib in LIBS),
        "protos/k2rl/common/v1/common.proto",
        "Makefile",
        "requirements/constraints.txt",
        _rel(workflow),
    ]
    for event in ("push", "pull_request"):
        assert event in triggers, f"{_rel(workflow)} does not run on {event}"
        patterns = (triggers[event] or {}).get("paths")
        assert patterns, (
            f"{_rel(workflow)}: on.{event} needs path filters (else it runs on every change)"
        )
        silent = [path for path in must_fire_for if not _filter_fires(patterns, path)]
        assert not silent, f"{_rel(workflow)}: on.{event}.paths do not fire for {silent}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_make_targets_exist(workflow: Path) -> None:
    targets = _make_targets(_load(workflow))
    assert targets, f"{_rel(workflow)} runs no `make <target>` step"
    phony = _makefile_phony_targets()
    for target in targets:
        assert target in phony, (
            f"{_rel(workflow)} runs `make {target}`: not a target of the Makefile"
        )
        dry_run = subprocess.run(
            ["make", "--no-print-directory", "-n", target], cwd=REPO, capture_output=True, text=True
        )
        output = dry_run.stdout + dry_run.stderr
        if dry_run.returncode != 0 or "Nothing to be done" in output:
            pytest.fail(f"{_rel(workflow)} runs `make {target}`, which has no recipe:\n{output}")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_installs_what_its_tests_need(workflow: Path) -> None:
    doc = _load(workflow)
    test_dirs = [d for target in _make_targets(doc) for d in _test_dirs_run_by(target)]
    installed = _apt_installed(doc)
    env = _env_vars(doc)
    problems = []
    for (binary, package), users in sorted(_binaries_needed(test_dirs).items()):
        if binary in RUNNER_PROVIDED:
            if RUNNER_PROVIDED[binary] not in env:
                problems.append(
                    f"{binary} (runner's own; set {RUNNER_PROVIDED[binary]}) for {users}"
                )
        elif package not in installed:
            problems.append(f"apt package {package} ({binary}) for {users}")
    assert not problems, f"{_rel(workflow)} does not provide: " + "; ".join(problems)
    if "bubblewrap" in installed:
        scripts = " ".join(step.get("run", "") for step in _steps(doc))
        assert "kernel.apparmor_restrict_unprivileged_userns=0" in scripts, (
            f"{_rel(workflow)} installs bubblewrap but leaves Ubuntu 24.04's AppArmor ban on "
            f"unprivileged user namespaces on, so bwrap fails with 'setting up uid map'"
        )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_conventions(workflow: Path) -> None:
    doc = _load(workflow)
    for job_id, job in doc.get("jobs", {}).items():
        assert "timeout-minutes" in job, f"{_rel(workflow)}: job {job_id} has no timeout-minutes"
    for step in _steps(doc):
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        assert ACTION_PIN.match(uses), f"{_rel(workflow)}: pin {uses!r} to a major version (@vN)"
        if uses.startswith("actions/setup-python@"):
            version = str((step.get("with") or {}).get("python-version"))
            assert version == "3.11", (
                f"{_rel(workflow)}: setup-python must install 3.11, not {version}"
            )
    assert any(
        (step.get("uses") or "").startswith("actions/setup-python@") for step in _steps(doc)
    ), f"{_rel(workflow)} never sets up Python 3.11 (the Makefile bootstraps .venv with it)"


def test_path_filter_semantics() -> None:
    """The checker above models GitHub's filters; pin the cases it relies on."""
    assert _filter_fires(["libs/**"], "libs/k2rl-core/src/k2rl/core/server.py")
    assert not _filter_fires(["libs/*"], "libs/k2rl-core/src/k2rl/core/server.py")
    assert _filter_fires(["services/trainer/**"], "services/trainer/tests/test_x.py")
    assert not _filter_fires(["services/trainer/**"], "services/trainer_v2/x.py")
    assert not _filter_fires(["libs/**", "!libs/k2rl-core/**"], "libs/k2rl-core/x.py")
    assert not _filter_fires(["Makefile"], "services/Makefile")
