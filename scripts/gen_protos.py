#!/usr/bin/env python3
"""Generate the Python code for the gRPC contracts in protos/ (what `make protos` runs).

    python scripts/gen_protos.py           # regenerate libs/k2rl-proto/src/k2rl in place
    python scripts/gen_protos.py --check   # exit 1 if the committed code has drifted

Every protos/k2rl/<pkg>/v1/*.proto becomes k2rl/<pkg>/v1/<name>_pb2.py and _pb2.pyi, plus
<name>_pb2_grpc.py when it defines a service, under libs/k2rl-proto/src, importable as
``from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc``.

Packaging: ``k2rl`` and ``k2rl.<pkg>`` are PEP 420 namespace packages shared with the
service distributions (services/<svc>/src/k2rl/<svc>/), so they get no ``__init__.py``;
only the leaf ``v1`` packages, which this distribution owns, get one (plus ``py.typed``, so
type checkers use the .pyi stubs).

Everything under libs/k2rl-proto/src/k2rl is generated: a regeneration writes what changed
and deletes what protoc no longer produces. Output is deterministic (sorted inputs, one
protoc invocation, fixed file contents), so ``--check`` can compare byte for byte.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROTO_ROOT = REPO_ROOT / "protos"
DEFAULT_OUT_DIR = REPO_ROOT / "libs" / "k2rl-proto" / "src"
# Top-level directory of the generated tree, inside both the proto root and the output dir.
NAMESPACE = "k2rl"
REGENERATE_HINT = "run `make protos` (or `.venv/bin/python scripts/gen_protos.py`) and commit"

# Lines of unified diff shown per drifted file, and the width lines are cut to: _pb2.py
# embeds the serialized descriptor as one very long line.
_DIFF_LINES_PER_FILE = 40
_DIFF_LINE_WIDTH = 160


class ProtocError(RuntimeError):
    """protoc failed or warned; the message carries its output."""


def find_protos(proto_root: Path) -> list[str]:
    """Proto files under ``proto_root/k2rl``, as sorted POSIX paths relative to proto_root."""
    base = proto_root / NAMESPACE
    if not base.is_dir():
        raise FileNotFoundError(f"no {NAMESPACE}/ directory under {proto_root}")
    files = sorted(p.relative_to(proto_root).as_posix() for p in base.rglob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no .proto files under {base}")
    return files


def _well_known_include() -> Path:
    """grpc_tools' bundled google/protobuf/*.proto (timestamp, duration, ...)."""
    return Path(str(importlib.resources.files("grpc_tools") / "_proto"))


def run_protoc(proto_root: Path, files: list[str], out_args: list[str]) -> None:
    """Run grpc_tools.protoc over ``files`` (relative to proto_root) with ``out_args``.

    Any warning is an error: an unused import or a misplaced option is a contract bug that
    should not reach the generated code.
    """
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "--proto_path=.",
        f"--proto_path={_well_known_include()}",
        *out_args,
        *files,
    ]
    result = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or output:
        raise ProtocError(f"protoc {'failed' if result.returncode else 'warned'}:\n{output}")


def compile_descriptor_set(proto_root: Path, *, include_source_info: bool = True) -> bytes:
    """A serialized FileDescriptorSet of every proto under proto_root (imports excluded).

    With source info it carries the comments, which the generated _pb2 modules strip; the
    lint tests use it to check that every element of the contracts is documented.
    """
    files = find_protos(proto_root)
    with tempfile.TemporaryDirectory(prefix="k2rl-descriptors-") as tmp:
        out = Path(tmp) / "descriptors.binpb"
        args = [f"--descriptor_set_out={out}"]
        if include_source_info:
            args.append("--include_source_info")
        run_protoc(proto_root, files, args)
        return out.read_bytes()


def _package_init(package: str, sources: list[str]) -> str:
    listed = "\n".join(f"    protos/{s}" for s in sources)
    return (
        f'"""Generated package {package}, from\n\n{listed}\n\n'
        'by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.\n"""\n'
    )


def generate(proto_root: Path, out_dir: Path) -> list[Path]:
    """Generate into ``out_dir`` (which should be empty); returns the files written."""
    files = find_protos(proto_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k2rl-descriptors-") as tmp:
        descriptor_set = Path(tmp) / "descriptors.binpb"
        run_protoc(
            proto_root,
            files,
            [
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                f"--descriptor_set_out={descriptor_set}",
            ],
        )
        parsed = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    # The gRPC plugin writes a _pb2_grpc.py even for files without services (common.proto);
    # it would hold only a version check, so it is left out rather than shipped as noise.
    for file_proto in parsed.file:
        if not file_proto.service:
            (out_dir / file_proto.name.replace(".proto", "_pb2_grpc.py")).unlink()
    # Leaf packages: one per directory holding protos. Namespace levels stay without
    # __init__.py so k2rl.<svc> can also come from the service distributions.
    by_dir: dict[str, list[str]] = {}
    for rel in files:
        by_dir.setdefault(str(Path(rel).parent.as_posix()), []).append(rel)
    for rel_dir, sources in sorted(by_dir.items()):
        pkg_dir = out_dir / rel_dir
        package = rel_dir.replace("/", ".")
        (pkg_dir / "__init__.py").write_text(_package_init(package, sources), encoding="utf-8")
        (pkg_dir / "py.typed").write_text("", encoding="utf-8")
    return sorted(p for p in (out_dir / NAMESPACE).rglob("*") if p.is_file())


def snapshot(out_dir: Path) -> dict[str, bytes]:
    """Contents of the generated tree under ``out_dir``: relative POSIX path -> bytes.

    Bytecode caches are ignored; everything else under k2rl/ counts, so a stray file (a
    hand-written module, or an __init__.py in a namespace level) is reported as drift.
    """
    base = out_dir / NAMESPACE
    if not base.is_dir():
        return {}
    tree: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        tree[path.relative_to(out_dir).as_posix()] = path.read_bytes()
    return tree


def _clip(line: str) -> str:
    line = line.rstrip("\n")
    return line if len(line) <= _DIFF_LINE_WIDTH else line[:_DIFF_LINE_WIDTH] + " [...]"


def describe_drift(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    """Human-readable differences between a fresh generation and the committed tree."""
    lines: list[str] = []
    for rel in sorted(expected.keys() - actual.keys()):
        lines.append(f"missing:    {rel} (protoc generates it; it is not committed)")
    for rel in sorted(actual.keys() - expected.keys()):
        lines.append(f"unexpected: {rel} (not generated from protos/; delete it)")
    for rel in sorted(expected.keys() & actual.keys()):
        if expected[rel] == actual[rel]:
            continue
        lines.append(f"changed:    {rel}")
        if rel.endswith("_pb2.py"):
            # Serialized descriptor and byte offsets: unreadable as a diff. The .pyi beside
            # it shows the same change as Python declarations.
            lines.append("    (serialized descriptor; the .pyi diff shows the change)")
            continue
        diff = list(
            difflib.unified_diff(
                actual[rel].decode("utf-8", "replace").splitlines(),
                expected[rel].decode("utf-8", "replace").splitlines(),
                fromfile=f"committed/{rel}",
                tofile=f"generated/{rel}",
                lineterm="",
                n=1,
            )
        )
        shown = diff[:_DIFF_LINES_PER_FILE]
        lines.extend("    " + _clip(d) for d in shown)
        if len(diff) > len(shown):
            lines.append(f"    ... {len(diff) - len(shown)} more diff lines")
    return lines


def check(proto_root: Path, out_dir: Path) -> list[str]:
    """Drift between ``out_dir`` and a fresh generation; empty when up to date."""
    with tempfile.TemporaryDirectory(prefix="k2rl-protos-") as tmp:
        generate(proto_root, Path(tmp))
        return describe_drift(snapshot(Path(tmp)), snapshot(out_dir))


def sync(proto_root: Path, out_dir: Path) -> tuple[list[str], list[str]]:
    """Regenerate ``out_dir`` in place. Returns (written, deleted) relative paths.

    Unchanged files are not rewritten, so their timestamps (and bytecode caches) survive.
    """
    with tempfile.TemporaryDirectory(prefix="k2rl-protos-") as tmp:
        generate(proto_root, Path(tmp))
        fresh = snapshot(Path(tmp))
    current = snapshot(out_dir)
    written: list[str] = []
    for rel, content in fresh.items():
        if current.get(rel) != content:
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written.append(rel)
    deleted: list[str] = []
    for rel in sorted(current.keys() - fresh.keys()):
        (out_dir / rel).unlink()
        deleted.append(rel)
    # Directories left without generated files (a removed proto package) go too.
    base = out_dir / NAMESPACE
    package_dirs = (d for d in base.rglob("*") if d.is_dir() and d.name != "__pycache__")
    for directory in sorted(package_dirs, reverse=True):  # children before parents
        if not any(p.is_file() and p.suffix != ".pyc" for p in directory.rglob("*")):
            shutil.rmtree(directory)
    return written, deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory and compare with --out; exit 1 on drift",
    )
    parser.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    proto_root, out_dir = args.proto_root.resolve(), args.out.resolve()
    try:
        if args.check:
            drift = check(proto_root, out_dir)
            if drift:
                print(
                    f"generated code in {out_dir} is out of date with {proto_root} "
                    f"({sum(1 for d in drift if not d.startswith(' '))} file(s)):",
                    file=sys.stderr,
                )
                print("\n".join(drift), file=sys.stderr)
                print(f"\n{REGENERATE_HINT}.", file=sys.stderr)
                return 1
            print(f"generated code in {out_dir} is up to date with {proto_root}")
            return 0
        written, deleted = sync(proto_root, out_dir)
    except (ProtocError, FileNotFoundError) as exc:
        print(f"gen_protos: {exc}", file=sys.stderr)
        return 2
    for rel in written:
        print(f"wrote   {rel}")
    for rel in deleted:
        print(f"deleted {rel}")
    if not written and not deleted:
        print(f"{out_dir / NAMESPACE} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
