"""Buf-style lint of the contracts, over their compiled descriptors.

The rules are those of buf's STANDARD category that shape these contracts, plus the
k2rl conventions (one package per service directory, the service named after it), and
buf's COMMENT_* rules: the contracts are what people read, so every service, RPC,
message, field, oneof, enum and enum value carries a comment. Naming rules run over the
FileDescriptors of the imported generated modules (what clients and servers really use);
the comment rules need source info, which generated modules strip, so they run over a
descriptor set compiled from protos/. Each rule is also run over a deliberately broken
proto, so a rule that silently stopped firing fails the suite too.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
SRC = REPO_ROOT / "libs" / "k2rl-proto" / "src"

LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
K2RL_PACKAGE = re.compile(r"^k2rl\.([a-z][a-z0-9_]*)\.v1$")

# Paths inside FileDescriptorProto / DescriptorProto / ... (descriptor.proto field numbers),
# the addresses SourceCodeInfo uses for comments.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def upper_snake(name: str) -> str:
    """PascalCase -> UPPER_SNAKE the way buf derives enum value prefixes
    (TensorDtype -> TENSOR_DTYPE, IpcHandleKind -> IPC_HANDLE_KIND)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()


def pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


@dataclass(frozen=True)
class Element:
    """One named element of a proto file, with its SourceCodeInfo path."""

    kind: str  # service | rpc | message | field | oneof | enum | enum_value
    name: str  # qualified within the file, e.g. "Trajectory.turns"
    path: tuple[int, ...]
    proto: object


def _walk_enum(enum, path: tuple[int, ...], scope: str) -> Iterator[Element]:
    name = f"{scope}{enum.name}"
    yield Element("enum", name, path, enum)
    for k, value in enumerate(enum.value):
        yield Element("enum_value", f"{name}.{value.name}", (*path, _ENUM_VALUE, k), value)


def _walk_message(message, path: tuple[int, ...], scope: str) -> Iterator[Element]:
    if message.options.map_entry:  # synthetic <Field>Entry of a map<,> field
        return
    name = f"{scope}{message.name}"
    yield Element("message", name, path, message)
    synthetic_oneofs = {f.oneof_index for f in message.field if f.proto3_optional}
    for k, field in enumerate(message.field):
        yield Element("field", f"{name}.{field.name}", (*path, _MESSAGE_FIELD, k), field)
    for k, oneof in enumerate(message.oneof_decl):
        if k not in synthetic_oneofs:  # proto3 `optional` fields get a hidden oneof
            yield Element("oneof", f"{name}.{oneof.name}", (*path, _MESSAGE_ONEOF, k), oneof)
    for k, nested in enumerate(message.nested_type):
        yield from _walk_message(nested, (*path, _MESSAGE_NESTED, k), f"{name}.")
    for k, enum in enumerate(message.enum_type):
        yield from _walk_enum(enum, (*path, _MESSAGE_ENUM, k), f"{name}.")


def walk(file: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    for i, service in enumerate(file.service):
        yield Element("service", service.name, (_FILE_SERVICE, i), service)
        for j, method in enumerate(service.method):
            path = (_FILE_SERVICE, i, _SERVICE_METHOD, j)
            yield Element("rpc", f"{service.name}.{method.name}", path, method)
    for i, message in enumerate(file.message_type):
        yield from _walk_message(message, (_FILE_MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        yield from _walk_enum(enum, (_FILE_ENUM, i), "")


def lint_names(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    """Naming and RPC-shape violations, as "RULE file: detail" lines."""
    problems: list[str] = []
    # RPC request/response types, counted over every file: no message serves two RPCs.
    rpc_types: Counter[str] = Counter()
    rpc_inputs: set[str] = set()
    rpc_outputs: set[str] = set()

    for file in files:

        def report(rule: str, detail: str, where: str = file.name) -> None:
            problems.append(f"{rule} {where}: {detail}")

        directory = str(PurePosixPath(file.name).parent)
        match = K2RL_PACKAGE.match(file.package)

        if file.syntax != "proto3":
            report("SYNTAX_PROTO3", f"syntax is {file.syntax or 'proto2'!r}")
        if file.package.replace(".", "/") != directory:
            report("PACKAGE_DIRECTORY_MATCH", f"package {file.package} is not the file's directory")
        if not match:
            report("PACKAGE_VERSION_SUFFIX", f"package {file.package} is not k2rl.<name>.v1")
        elif PurePosixPath(file.name).name != f"{match.group(1)}.proto":
            report("FILE_NAME", f"file should be named {match.group(1)}.proto")

        if len(file.service) > 1:
            report("ONE_SERVICE_PER_PACKAGE", f"{len(file.service)} services")
        for service in file.service:
            if not service.name.endswith("Service"):
                report("SERVICE_SUFFIX", f"service {service.name} does not end in Service")
            if match and service.name != pascal(match.group(1)) + "Service":
                want = pascal(match.group(1)) + "Service"
                report("SERVICE_NAME", f"service {service.name} should be {want}")
            for method in service.method:
                rpc = f"{service.name}.{method.name}"
                if not PASCAL.match(method.name):
                    report("RPC_PASCAL_CASE", rpc)
                want_in = f".{file.package}.{method.name}Request"
                want_out = f".{file.package}.{method.name}Response"
                if method.input_type != want_in:
                    report(
                        "RPC_REQUEST_STANDARD_NAME",
                        f"{rpc} takes {method.input_type[1:]}, want {want_in[1:]}",
                    )
                if method.output_type != want_out:
                    report(
                        "RPC_RESPONSE_STANDARD_NAME",
                        f"{rpc} returns {method.output_type[1:]}, want {want_out[1:]}",
                    )
                rpc_types[method.input_type] += 1
                rpc_types[method.output_type] += 1
                rpc_inputs.add(method.input_type)
                rpc_outputs.add(method.output_type)

        for element in walk(file):
            proto, name = element.proto, element.name
            if element.kind in {"message", "enum"} and not PASCAL.match(proto.name):
                report(f"{element.kind.upper()}_PASCAL_CASE", name)
            elif element.kind in {"field", "oneof"} and not LOWER_SNAKE.match(proto.name):
                report(f"{element.kind.upper()}_LOWER_SNAKE_CASE", name)
            elif element.kind == "enum_value" and not UPPER_SNAKE.match(proto.name):
                report("ENUM_VALUE_UPPER_SNAKE_CASE", name)
            if element.kind == "enum":
                prefix = upper_snake(proto.name) + "_"
                zero = [v for v in proto.value if v.number == 0]
                if not zero or zero[0].name != prefix + "UNSPECIFIED" or proto.value[0].number != 0:
                    report(
                        "ENUM_ZERO_VALUE_SUFFIX",
                        f"{name}: first value must be {prefix}UNSPECIFIED = 0",
                    )
                for value in proto.value:
                    if not value.name.startswith(prefix) or value.name == prefix:
                        report("ENUM_VALUE_PREFIX", f"{name}.{value.name} lacks prefix {prefix}")

    for type_name, uses in sorted(rpc_types.items()):
        if uses > 1:
            problems.append(
                f"RPC_REQUEST_RESPONSE_UNIQUE {type_name[1:]}: used by {uses} RPC inputs/outputs"
            )
    for file in files:
        for message in file.message_type:
            full = f".{file.package}.{message.name}"
            if message.name.endswith("Request") and full not in rpc_inputs:
                problems.append(
                    f"REQUEST_NAME_RESERVED {file.name}: {message.name} is no RPC's request"
                )
            if message.name.endswith("Response") and full not in rpc_outputs:
                problems.append(
                    f"RESPONSE_NAME_RESERVED {file.name}: {message.name} is no RPC's response"
                )
    return problems


def lint_comments(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Elements without a leading comment (buf COMMENT_SERVICE, COMMENT_RPC, ...)."""
    problems: list[str] = []
    for file in descriptor_set.file:
        if not file.HasField("source_code_info"):
            problems.append(f"SOURCE_INFO {file.name}: compiled without --include_source_info")
            continue
        comments = {
            tuple(location.path): location.leading_comments.strip()
            for location in file.source_code_info.location
        }
        for element in walk(file):
            if not comments.get(element.path):
                problems.append(f"COMMENT_{element.kind.upper()} {file.name}: {element.name}")
    return problems


# --- the real contracts -------------------------------------------------------------------


def _generated_module_names() -> list[str]:
    base = SRC / "k2rl"
    return sorted(
        ".".join(p.relative_to(SRC).with_suffix("").parts) for p in base.rglob("*_pb2.py")
    )


def _import_generated(name: str) -> ModuleType:
    module = importlib.import_module(name)
    origin = Path(module.__file__ or "").resolve()
    # Guard against testing a stale copy installed elsewhere.
    assert SRC in origin.parents, f"{name} imported from {origin}, not from {SRC}"
    return module


@pytest.fixture(scope="module")
def contract_files() -> list[descriptor_pb2.FileDescriptorProto]:
    names = _generated_module_names()
    assert names, f"no generated modules under {SRC}: run `make protos`"
    files = []
    for name in names:
        file = descriptor_pb2.FileDescriptorProto()
        _import_generated(name).DESCRIPTOR.CopyToProto(file)
        files.append(file)
    return files


def test_every_proto_has_a_generated_module(
    contract_files: list[descriptor_pb2.FileDescriptorProto], gen_protos: ModuleType
) -> None:
    assert sorted(f.name for f in contract_files) == gen_protos.find_protos(REPO_ROOT / "protos")


def test_contracts_follow_naming_and_rpc_rules(
    contract_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    problems = lint_names(contract_files)
    assert not problems, "lint violations:\n" + "\n".join(problems)


def test_contracts_are_documented(gen_protos: ModuleType) -> None:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
        gen_protos.compile_descriptor_set(REPO_ROOT / "protos", include_source_info=True)
    )
    problems = lint_comments(descriptor_set)
    assert not problems, "undocumented elements:\n" + "\n".join(problems)


# --- the rules themselves -----------------------------------------------------------------

_BROKEN_PROTO = """\
syntax = "proto3";

package k2rl.elsewhere.v1;

import "google/protobuf/empty.proto";

// A service.
service Broken {
  // An RPC.
  rpc DoThing(Thing) returns (google.protobuf.Empty);
  // Another RPC.
  rpc get_other(Thing) returns (OtherResponse);
}

// A message.
message Thing {
  // A field.
  string camelCase = 1;
  // A oneof.
  oneof Choice {
    // An option.
    string a = 2;
  }
}

// A response no RPC returns under its own name.
message OtherResponse {
  string undocumented = 1;
}

message StrayRequest {}

// An enum.
enum Color {
  // Zero.
  RED = 0;
  // One.
  COLOR_blue = 1;
}
"""

_CLEAN_PROTO = """\
syntax = "proto3";

package k2rl.good_thing.v1;

// Does things.
service GoodThingService {
  // Does one thing.
  rpc DoThing(DoThingRequest) returns (stream DoThingResponse);
}

// Request of DoThing.
message DoThingRequest {
  // How many.
  optional uint32 count = 1;
  // Which.
  oneof choice {
    // By name.
    string name = 2;
  }
}

// Response of DoThing.
message DoThingResponse {
  // Labels.
  map<string, string> labels = 1;
  // Color.
  TensorColor color = 2;
}

// A color.
enum TensorColor {
  // Not set.
  TENSOR_COLOR_UNSPECIFIED = 0;
  // Red.
  TENSOR_COLOR_RED = 1;
}
"""


def _compile(
    gen_protos: ModuleType, root: Path, rel: str, text: str
) -> descriptor_pb2.FileDescriptorSet:
    path = root / rel
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return descriptor_pb2.FileDescriptorSet.FromString(gen_protos.compile_descriptor_set(root))


def test_rules_catch_a_broken_contract(gen_protos: ModuleType, tmp_path: Path) -> None:
    descriptors = _compile(gen_protos, tmp_path, "k2rl/bad/v1/broken.proto", _BROKEN_PROTO)
    problems = "\n".join(lint_names(list(descriptors.file)) + lint_comments(descriptors))
    file = "k2rl/bad/v1/broken.proto"
    expected = [
        f"PACKAGE_DIRECTORY_MATCH {file}: package k2rl.elsewhere.v1",
        f"FILE_NAME {file}: file should be named elsewhere.proto",
        f"SERVICE_SUFFIX {file}: service Broken",
        f"SERVICE_NAME {file}: service Broken should be ElsewhereService",
        f"RPC_PASCAL_CASE {file}: Broken.get_other",
        f"RPC_REQUEST_STANDARD_NAME {file}: Broken.DoThing takes k2rl.elsewhere.v1.Thing",
        f"RPC_RESPONSE_STANDARD_NAME {file}: Broken.DoThing returns google.protobuf.Empty",
        "RPC_REQUEST_RESPONSE_UNIQUE k2rl.elsewhere.v1.Thing: used by 2",
        f"FIELD_LOWER_SNAKE_CASE {file}: Thing.camelCase",
        f"ONEOF_LOWER_SNAKE_CASE {file}: Thing.Choice",
        f"ENUM_ZERO_VALUE_SUFFIX {file}: Color: first value must be COLOR_UNSPECIFIED",
        f"ENUM_VALUE_PREFIX {file}: Color.RED lacks prefix COLOR_",
        f"ENUM_VALUE_UPPER_SNAKE_CASE {file}: Color.COLOR_blue",
        f"REQUEST_NAME_RESERVED {file}: StrayRequest",
        f"COMMENT_FIELD {file}: OtherResponse.undocumented",
        f"COMMENT_MESSAGE {file}: StrayRequest",
    ]
    missing = [line for line in expected if line not in problems]
    assert not missing, f"rules did not fire:\n{chr(10).join(missing)}\n\nreported:\n{problems}"


def test_rules_accept_a_clean_contract(gen_protos: ModuleType, tmp_path: Path) -> None:
    """Maps, proto3 optional, oneofs and streaming must not trip the rules."""
    descriptors = _compile(
        gen_protos, tmp_path, "k2rl/good_thing/v1/good_thing.proto", _CLEAN_PROTO
    )
    problems = lint_names(list(descriptors.file)) + lint_comments(descriptors)
    assert problems == []


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("TensorDtype", "TENSOR_DTYPE"),
        ("IpcHandleKind", "IPC_HANDLE_KIND"),
        ("SleepLevel", "SLEEP_LEVEL"),
        ("HTTPStatus", "HTTP_STATUS"),
        ("Float8Format", "FLOAT8_FORMAT"),
    ],
)
def test_upper_snake_matches_buf(name: str, prefix: str) -> None:
    assert upper_snake(name) == prefix
