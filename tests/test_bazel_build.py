"""The Bazel workspace builds offline, covers every lib and service, and generates the protos.

Two layers:

* Static checks of the BUILD files (no Bazel needed, so they run everywhere): every
  directory under libs/ and services/ has a BUILD.bazel with a py_library named after the
  directory (so `//libs/k2rl-core` and `//services/trainer` resolve), built from src/, whose
  k2rl deps are exactly the k2rl-* dependencies of its pyproject.toml. A new lib or service
  without a target, or a BUILD file that drifts from the pip dependency graph, fails here.
* `bazel build //...` itself, then the genrule's outputs: the Python code for every
  service's proto exists and is byte-identical to what `make protos` committed under
  libs/k2rl-proto.

The build is cold on purpose: a private --output_base per run is what a fresh CI box sees,
and it costs seconds (Bazel 4.2.3 native rules, no external repositories).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from k2rl.core.testing import require_binary

REPO = Path(__file__).resolve().parents[1]
PROTO_LIB_SRC = REPO / "libs" / "k2rl-proto" / "src"
BAZEL_TIMEOUT_S = 240


def _component_dirs(parent: str) -> list[Path]:
    root = REPO / parent
    return sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and not path.name.startswith((".", "_")) and path.name != "__pycache__"
    )


LIBS = _component_dirs("libs")
SERVICES = _component_dirs("services")
COMPONENTS = LIBS + SERVICES


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# --- static checks of the BUILD files ------------------------------------------------------


def _py_libraries(build_file: Path) -> dict[str, dict[str, ast.expr]]:
    """py_library calls in a BUILD file, by name -> keyword arguments (unevaluated).

    The BUILD files use the Python-compatible subset of Starlark, so the stdlib parser reads
    them; a file it cannot parse fails the test with the SyntaxError's location.
    """
    tree = ast.parse(build_file.read_text(), filename=str(build_file))
    targets: dict[str, dict[str, ast.expr]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "py_library"
        ):
            kwargs = {kw.arg: kw.value for kw in node.keywords if kw.arg is not None}
            targets[ast.literal_eval(kwargs["name"])] = kwargs
    return targets


def _glob_patterns(expr: ast.expr) -> list[str]:
    """Include patterns of `glob([...])` terms in a srcs expression (`glob(...) + [...]`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _glob_patterns(expr.left) + _glob_patterns(expr.right)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "glob":
        include = (
            expr.args[0] if expr.args else {kw.arg: kw.value for kw in expr.keywords}["include"]
        )
        return list(ast.literal_eval(include))
    return []


def _k2rl_dependencies(pyproject: Path) -> set[str]:
    """Bazel labels for the k2rl-* distributions a pyproject.toml depends on."""
    project = tomllib.loads(pyproject.read_text())["project"]
    names = {canonicalize_name(Requirement(dep).name) for dep in project.get("dependencies", [])}
    return {f"//libs/{name}" for name in names if name.startswith("k2rl-")}


@pytest.mark.parametrize("component", COMPONENTS, ids=_rel)
def test_component_has_py_library(component: Path) -> None:
    build_file = component / "BUILD.bazel"
    siblings = [c for c in COMPONENTS if c.parent == component.parent and c != component]
    example = f" (e.g. {_rel(siblings[0])}/BUILD.bazel)" if siblings else ""
    assert build_file.is_file(), (
        f"{_rel(component)} has no BUILD.bazel; copy a sibling's{example} so that "
        f"`bazel build //...` covers it"
    )
    targets = _py_libraries(build_file)
    assert component.name in targets, (
        f"{_rel(build_file)} must define py_library(name = {component.name!r}) so the label "
        f"//{_rel(component)} resolves; found {sorted(targets) or 'no py_library'}"
    )
    target = targets[component.name]

    assert "src/**/*.py" in _glob_patterns(target.get("srcs", ast.List(elts=[]))), (
        f"//{_rel(component)}: srcs must glob src/**/*.py so new modules are picked up"
    )
    assert ast.literal_eval(target.get("imports", ast.List(elts=[]))) == ["src"], (
        f"//{_rel(component)}: imports must be ['src'] (src layout, `k2rl` namespace package)"
    )

    pyproject = component / "pyproject.toml"
    assert pyproject.is_file(), f"{_rel(component)} has no pyproject.toml (each is a distribution)"
    declared = set(ast.literal_eval(target.get("deps", ast.List(elts=[]))))
    declared_k2rl = {label for label in declared if label.startswith(("//libs/", "//services/"))}
    expected = _k2rl_dependencies(pyproject)
    missing_libs = sorted(label for label in expected if not (REPO / label[2:]).is_dir())
    assert not missing_libs, (
        f"{_rel(component)}/pyproject.toml depends on {missing_libs}: no such lib"
    )
    assert declared_k2rl == expected, (
        f"//{_rel(component)} deps {sorted(declared_k2rl)} disagree with the k2rl-* "
        f"dependencies of its pyproject.toml {sorted(expected)}; keep the two graphs equal"
    )


def test_protos_package_has_codegen_genrule() -> None:
    tree = ast.parse((REPO / "protos" / "BUILD.bazel").read_text(), filename="protos/BUILD.bazel")
    genrules = {
        ast.literal_eval(kw.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "genrule"
        for kw in node.keywords
        if kw.arg == "name"
    }
    assert "python_codegen" in genrules, (
        "protos/BUILD.bazel lost the //protos:python_codegen genrule"
    )


# --- bazel build //... -----------------------------------------------------------------------


@dataclass(frozen=True)
class BazelBuild:
    returncode: int
    log: str = field(repr=False)
    bazel_bin: Path | None

    def require_success(self) -> Path:
        if self.returncode != 0 or self.bazel_bin is None:
            pytest.fail("`bazel build //...` failed; see test_bazel_build_all for its log")
        return self.bazel_bin


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="module")
def bazel_build(tmp_path_factory: pytest.TempPathFactory) -> BazelBuild:
    bazel = require_binary("bazel", "bazel-bootstrap")
    # --batch: no Bazel server outlives the test. --output_base: a fresh output tree per
    # run (the cold build a CI box does) that never touches the developer's own server or
    # cache; the install base stays in the default output_user_root, unpacked once.
    startup = [bazel, "--batch", f"--output_base={tmp_path_factory.mktemp('bazel')}"]
    # --symlink_prefix=/: no bazel-* links in the checkout pointing into a temp dir.
    flags = ["--symlink_prefix=/", "--color=no", "--curses=no", "--noshow_progress"]
    # The codegen genrule runs scripts/gen_protos.py with $K2RL_PYTHON (.bazelrc passes it
    # through): the interpreter running the tests, which has the pinned grpcio-tools.
    env = {**os.environ, "K2RL_PYTHON": sys.executable}

    def bazel_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*startup, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=BAZEL_TIMEOUT_S,
            check=False,
        )

    build = bazel_cmd("build", *flags, "//...")
    log = build.stdout + build.stderr
    if build.returncode != 0:
        return BazelBuild(build.returncode, log, None)
    info = bazel_cmd("info", *flags, "bazel-bin")
    assert info.returncode == 0, f"`bazel info bazel-bin` failed:\n{_tail(info.stderr)}"
    return BazelBuild(0, log, Path(info.stdout.strip()))


@pytest.mark.needs_system
@pytest.mark.slow
def test_bazel_build_all(bazel_build: BazelBuild) -> None:
    assert bazel_build.returncode == 0, (
        f"`bazel build //...` exited {bazel_build.returncode}:\n{_tail(bazel_build.log)}"
    )


@pytest.mark.needs_system
@pytest.mark.slow
@pytest.mark.parametrize("package", ["common", *(svc.name for svc in SERVICES)])
def test_codegen_outputs_exist(bazel_build: BazelBuild, package: str) -> None:
    generated = bazel_build.require_success() / "protos" / "k2rl" / package / "v1"
    # common/v1 holds messages only; every service's proto defines its gRPC service.
    suffixes = ["_pb2.py", "_pb2.pyi"] + ([] if package == "common" else ["_pb2_grpc.py"])
    expected = [generated / f"{package}{suffix}" for suffix in suffixes]
    expected += [generated / "__init__.py", generated / "py.typed"]
    missing = [str(path) for path in expected if not path.is_file()]
    assert not missing, (
        f"//protos:python_codegen produced no code for protos/k2rl/{package}/v1/{package}.proto: "
        f"missing {missing}"
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Files under root/k2rl (bytecode caches aside): relative POSIX path -> contents."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted((root / "k2rl").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.mark.needs_system
@pytest.mark.slow
def test_codegen_matches_committed_proto_lib(bazel_build: BazelBuild) -> None:
    """Bazel and `make protos` produce the same tree: same generator, same file list."""
    from_bazel = _tree(bazel_build.require_success() / "protos")
    committed = _tree(PROTO_LIB_SRC)
    hint = (
        "run `make protos`; if that does not fix it, //protos:python_codegen (protos/BUILD.bazel) "
        "calls scripts/gen_protos.py differently from `make protos`"
    )
    assert sorted(from_bazel) == sorted(committed), (
        f"generated file sets differ: only from Bazel {sorted(set(from_bazel) - set(committed))}, "
        f"only committed {sorted(set(committed) - set(from_bazel))}; {hint}"
    )
    differing = sorted(name for name in from_bazel if from_bazel[name] != committed[name])
    assert not differing, f"Bazel's output differs from libs/k2rl-proto/src for {differing}; {hint}"
