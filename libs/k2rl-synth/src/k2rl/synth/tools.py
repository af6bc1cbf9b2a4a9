"""Tool specs and the tool repository (stage 1 of K2 report 3.1.1).

A ``ToolSpec`` is one callable tool: a name, a description and a JSON Schema for its
arguments. Real specs come from MCP servers' ``tools/list`` results or from OpenAI
function-tool JSON; synthetic ones come from domain evolution (``evolution.py``). Every
spec is validated when it is built, with the same rules whatever its origin:

- ``name`` matches ``TOOL_NAME_PATTERN`` (the OpenAI function-name rule, so every tool can
  be emitted as an OpenAI tool),
- ``description`` is a non-empty string,
- ``parameters`` is itself a valid JSON Schema (checked against its metaschema), of
  ``"type": "object"``, whose ``required`` names only declared properties.

Import errors raise ``ToolSpecError`` naming the file, the tool and the field at fault.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import validators

from k2rl.core.errors import InvalidArgument

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
SOURCES = ("mcp", "openai", "synthetic")
SPEC_KEYS = ("name", "description", "parameters", "source", "domain", "category")

# Envelopes of the two import formats, checked before any tool is looked at.
MCP_TOOLS_LIST_SCHEMA: dict = {
    "type": "object",
    "required": ["tools"],
    "properties": {
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "inputSchema"],
                "properties": {
                    "name": {"type": "string"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "inputSchema": {"type": "object"},
                },
            },
        },
    },
}
OPENAI_FUNCTION_SCHEMA: dict = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "parameters": {"type": "object"},
        "strict": {"type": "boolean"},
    },
}
OPENAI_TOOL_SCHEMA: dict = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {"type": {"const": "function"}, "function": OPENAI_FUNCTION_SCHEMA},
}


class ToolSpecError(InvalidArgument, ValueError):
    """A tool spec or tool file that fails validation; the message says where and why."""


@dataclass(frozen=True)
class ToolSpec:
    """One tool: ``parameters`` is a JSON Schema object for its arguments.

    ``source`` is "mcp", "openai" or "synthetic"; ``domain`` / ``category`` place it in the
    hierarchy of K2 report 3.1.1 (category -> application domain -> tool).
    """

    name: str
    description: str
    parameters: dict
    source: str
    domain: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        validate_tool_spec(self)

    __hash__ = None  # type: ignore[assignment]  # parameters is a dict

    def to_openai(self) -> dict:
        """The OpenAI function-tool JSON for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in SPEC_KEYS}

    @classmethod
    def from_dict(cls, data: dict) -> ToolSpec:
        if not isinstance(data, dict):
            raise ToolSpecError(f"a tool spec must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise ToolSpecError(f"unknown keys {unknown}; allowed: {list(SPEC_KEYS)}", field=unknown[0])
        missing = [key for key in ("name", "description", "parameters", "source") if key not in data]
        if missing:
            raise ToolSpecError(f"missing keys {missing}", field=missing[0])
        return cls(**data)


def validate_tool_spec(spec: ToolSpec) -> None:
    """Raise ``ToolSpecError`` (with ``field`` set) unless ``spec`` is a usable tool."""
    label = f"tool {spec.name!r}"
    if not isinstance(spec.name, str) or not TOOL_NAME_PATTERN.match(spec.name):
        raise ToolSpecError(
            f"{label}: name must match {TOOL_NAME_PATTERN.pattern} (letters, digits, '_' or '-', "
            "at most 64 characters, not starting with a digit)",
            field="name",
        )
    if not isinstance(spec.description, str) or not spec.description.strip():
        raise ToolSpecError(f"{label}: description must be a non-empty string", field="description")
    if spec.source not in SOURCES:
        raise ToolSpecError(f"{label}: source must be one of {list(SOURCES)}, got {spec.source!r}", field="source")
    for key in ("domain", "category"):
        if not isinstance(getattr(spec, key), str):
            raise ToolSpecError(f"{label}: {key} must be a string", field=key)
    validate_parameters_schema(spec.parameters, label=label)


def validate_parameters_schema(schema: Any, *, label: str) -> None:
    """Check that ``schema`` is a valid JSON Schema describing an object of arguments."""
    if not isinstance(schema, dict):
        raise ToolSpecError(f"{label}: parameters must be a JSON Schema object, got {type(schema).__name__}",
                            field="parameters")
    validator_cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "(root)"
        raise ToolSpecError(f"{label}: parameters is not a valid JSON Schema at {where}: {exc.message}",
                            field="parameters") from None
    if schema.get("type") != "object":
        raise ToolSpecError(f"{label}: parameters must have \"type\": \"object\", got {schema.get('type')!r}",
                            field="parameters")
    declared = set(schema.get("properties", {}))
    undeclared = [name for name in schema.get("required", []) if name not in declared]
    if undeclared:
        raise ToolSpecError(f"{label}: parameters.required names undeclared properties {undeclared}",
                            field="parameters")


def normalize_tool_name(name: str) -> str:
    """Name key for dedup: case, separators and camelCase folded (``getWeather`` == ``get-weather``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


# ---------------------------------------------------------------- importers


def import_mcp_tools(doc: dict | list, *, domain: str = "", category: str = "") -> list[ToolSpec]:
    """Tools from an MCP ``tools/list`` result (``{"tools": [{name, description, inputSchema}]}``).

    Also accepts the whole JSON-RPC response (``{"result": {"tools": ...}}``) or a bare list
    of tools.
    """
    doc = _unwrap_jsonrpc(doc)
    if isinstance(doc, list):
        doc = {"tools": doc}
    _check_envelope(doc, MCP_TOOLS_LIST_SCHEMA, "MCP tools/list result")
    specs = [
        _build_spec(index, raw.get("name"), description=raw.get("description") or raw.get("title", ""),
                    parameters=raw["inputSchema"], source="mcp", domain=domain, category=category)
        for index, raw in enumerate(doc["tools"])
    ]
    _reject_duplicate_names(specs)
    return specs


def import_openai_tools(doc: dict | list, *, domain: str = "", category: str = "") -> list[ToolSpec]:
    """Tools from OpenAI function-tool JSON.

    Accepts a list (or ``{"tools": [...]}`` / ``{"functions": [...]}``) of either
    ``{"type": "function", "function": {...}}`` entries or bare function objects
    ``{name, description, parameters}``, or one such entry alone.
    """
    entries = _openai_entries(doc)
    specs = []
    for index, entry in enumerate(entries):
        function = _openai_function(index, entry)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        specs.append(_build_spec(index, function["name"], description=function.get("description", ""),
                                 parameters=parameters, source="openai", domain=domain, category=category))
    _reject_duplicate_names(specs)
    return specs


def load_tool_file(path: str | os.PathLike, *, domain: str | None = None, category: str = "") -> list[ToolSpec]:
    """Load a JSON tool file, detecting its format: MCP tools/list, OpenAI tools, or ToolSpec JSONL.

    One file describes one server / toolset: unless ``domain`` is given, MCP and OpenAI
    tools get the file's stem as their domain. Errors name the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolSpecError(f"{path}: cannot read tool file: {exc.strerror}") from None
    domain = path.stem if domain is None else domain
    try:
        return _parse_tool_text(text, domain=domain, category=category)
    except ToolSpecError as exc:
        raise ToolSpecError(f"{path}: {exc.message}", field=exc.field) from None


def load_fixture_tools() -> list[ToolSpec]:
    """The real tool specs shipped with this package (``fixtures/mcp`` and ``fixtures/openai``)."""
    root = resources.files("k2rl.synth") / "fixtures"
    specs: list[ToolSpec] = []
    for fmt in ("mcp", "openai"):
        for entry in sorted((root / fmt).iterdir(), key=lambda item: item.name):
            if entry.name.endswith(".json"):
                with resources.as_file(entry) as file_path:
                    specs.extend(load_tool_file(file_path))
    return specs


def _parse_tool_text(text: str, *, domain: str, category: str) -> list[ToolSpec]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if _looks_like_jsonl(text):
            return _parse_spec_jsonl(text)
        raise ToolSpecError(f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    return _import_detected(doc, domain=domain, category=category)


def _looks_like_jsonl(text: str) -> bool:
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first_line), dict)
    except json.JSONDecodeError:
        return False


def _import_detected(doc: Any, *, domain: str, category: str) -> list[ToolSpec]:
    fmt = detect_tool_format(doc)
    if fmt == "mcp":
        return import_mcp_tools(doc, domain=domain, category=category)
    if fmt == "openai":
        return import_openai_tools(doc, domain=domain, category=category)
    return _specs_from_dicts(doc if isinstance(doc, list) else [doc])


def detect_tool_format(doc: Any) -> str:
    """Format of a tool document: "mcp", "openai" or "spec" (ToolSpec dicts), from its first entry."""
    doc = _unwrap_jsonrpc(doc)
    entries = doc
    if isinstance(doc, dict):
        entries = doc.get("tools", doc.get("functions", [doc]))
    if not isinstance(entries, list) or not entries:
        raise ToolSpecError("cannot detect the tool format: expected a non-empty list of tools "
                            "(MCP {\"tools\": [...]} or OpenAI [{\"type\": \"function\", ...}])")
    first = entries[0]
    if not isinstance(first, dict):
        raise ToolSpecError(f"tool #0: expected a JSON object, got {type(first).__name__}")
    if "inputSchema" in first:
        return "mcp"
    if "source" in first:
        return "spec"
    if "function" in first or "parameters" in first or first.get("type") == "function":
        return "openai"
    raise ToolSpecError(f"tool #0: cannot tell the format from its keys {sorted(first)}: "
                        "MCP tools have inputSchema, OpenAI tools have function/parameters")


def _parse_spec_jsonl(text: str) -> list[ToolSpec]:
    """ToolSpec dicts, one JSON object per line (the repository's own format)."""
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ToolSpecError(f"line {lineno}: not valid JSON ({exc.msg})") from None
    specs = []
    for lineno, item in items:
        try:
            specs.append(ToolSpec.from_dict(item))
        except ToolSpecError as exc:
            raise ToolSpecError(f"line {lineno}: {exc.message}", field=exc.field) from None
    _reject_duplicate_names(specs)
    return specs


def _specs_from_dicts(items: list) -> list[ToolSpec]:
    specs = []
    for index, item in enumerate(items):
        try:
            specs.append(ToolSpec.from_dict(item))
        except ToolSpecError as exc:
            raise ToolSpecError(f"entry #{index}: {exc.message}", field=exc.field) from None
    _reject_duplicate_names(specs)
    return specs


def _unwrap_jsonrpc(doc: Any) -> Any:
    if isinstance(doc, dict) and "result" in doc and ("jsonrpc" in doc or "id" in doc):
        return doc["result"]
    return doc


def _openai_entries(doc: Any) -> list:
    if isinstance(doc, dict):
        if "tools" in doc or "functions" in doc:
            doc = doc.get("tools", doc.get("functions"))
        else:
            doc = [doc]
    if not isinstance(doc, list):
        raise ToolSpecError(f"OpenAI tools: expected a list of tools, got {type(doc).__name__}")
    return doc


def _openai_function(index: int, entry: Any) -> dict:
    wrapped = isinstance(entry, dict) and ("function" in entry or "type" in entry)
    schema = OPENAI_TOOL_SCHEMA if wrapped else OPENAI_FUNCTION_SCHEMA
    _check_envelope(entry, schema, f"OpenAI tool #{index}")
    return entry["function"] if wrapped else entry


def _check_envelope(doc: Any, schema: dict, what: str) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise ToolSpecError(f"{what}: invalid at {where}: {error.message}", field=where)


def _build_spec(index: int, name: Any, **fields: Any) -> ToolSpec:
    try:
        return ToolSpec(name=name, **fields)
    except ToolSpecError as exc:
        raise ToolSpecError(f"entry #{index}: {exc.message}", field=exc.field) from None


def _reject_duplicate_names(specs: Iterable[ToolSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ToolSpecError(f"duplicate tool name {spec.name!r}", field="name")
        seen.add(spec.name)


# ---------------------------------------------------------------- repository


class ToolRepository:
    """An ordered set of tools, unique by normalised name.

    ``add`` keeps the first tool for a name, except that a real tool (mcp / openai)
    replaces a synthetic one of the same name. Embedding-similarity dedup is
    ``dedup.dedup_tools``, applied to ``list()`` and fed back through ``replace``.
    """

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self.extend(specs)

    def add(self, spec: ToolSpec) -> bool:
        """Add ``spec``; False when an equal-named tool was kept instead."""
        key = normalize_tool_name(spec.name)
        kept = self._tools.get(key)
        if kept is not None and not (kept.source == "synthetic" and spec.source != "synthetic"):
            return False
        self._tools[key] = spec
        return True

    def extend(self, specs: Iterable[ToolSpec]) -> int:
        """Add each spec; returns how many were added."""
        return sum(self.add(spec) for spec in specs)

    def replace(self, specs: Iterable[ToolSpec]) -> None:
        self._tools = {}
        self.extend(specs)

    def list(self) -> list[ToolSpec]:
        return list(self._tools.values())

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(normalize_tool_name(name))

    def by_domain(self, domain: str) -> list[ToolSpec]:
        return [spec for spec in self._tools.values() if spec.domain == domain]

    def domains(self) -> list[str]:
        return sorted({spec.domain for spec in self._tools.values()})

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self.list())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_tool_name(name) in self._tools

    def save(self, path: str | os.PathLike) -> None:
        """Write one ToolSpec JSON object per line, atomically (write then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for spec in self._tools.values():
                out.write(json.dumps(spec.to_dict(), sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ToolRepository:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ToolSpecError(f"{path}: cannot read tool repository: {exc.strerror}") from None
        try:
            specs = _parse_spec_jsonl(text) if text.strip() else []
        except ToolSpecError as exc:
            raise ToolSpecError(f"{path}: {exc.message}", field=exc.field) from None
        return cls(specs)
