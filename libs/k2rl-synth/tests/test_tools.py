"""Stage 1: tool spec import (MCP tools/list, OpenAI function tools), validation, repository."""

from __future__ import annotations

import json

import grpc
import pytest

from k2rl.synth.tools import (
    ToolRepository,
    ToolSpec,
    ToolSpecError,
    import_mcp_tools,
    import_openai_tools,
    load_fixture_tools,
    load_tool_file,
    normalize_tool_name,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


def mcp_doc(*tools: dict) -> dict:
    return {"tools": list(tools)}


def mcp_tool(name: str = "get_forecast", schema: dict | None = None, description: str = "Forecast") -> dict:
    return {"name": name, "description": description, "inputSchema": WEATHER_SCHEMA if schema is None else schema}


def test_mcp_tools_list_result_imports_every_field():
    (spec,) = import_mcp_tools(mcp_doc(mcp_tool()), domain="weather", category="info")
    assert spec == ToolSpec("get_forecast", "Forecast", WEATHER_SCHEMA, "mcp", "weather", "info")


def test_mcp_jsonrpc_response_and_bare_list_are_accepted():
    response = {"jsonrpc": "2.0", "id": 1, "result": mcp_doc(mcp_tool("a_tool"), mcp_tool("b_tool"))}
    assert [spec.name for spec in import_mcp_tools(response)] == ["a_tool", "b_tool"]
    assert [spec.name for spec in import_mcp_tools([mcp_tool("c_tool")])] == ["c_tool"]


def test_openai_wrapped_bare_and_enveloped_forms_import_alike():
    function = {"name": "get_forecast", "description": "Forecast", "parameters": WEATHER_SCHEMA}
    wrapped = {"type": "function", "function": function}
    for doc in ([wrapped], [function], {"tools": [wrapped]}, {"functions": [function]}, wrapped):
        (spec,) = import_openai_tools(doc)
        assert (spec.name, spec.parameters, spec.source) == ("get_forecast", WEATHER_SCHEMA, "openai")


def test_openai_function_without_parameters_gets_an_empty_object_schema():
    (spec,) = import_openai_tools([{"name": "ping", "description": "Check liveness"}])
    assert spec.parameters == {"type": "object", "properties": {}}


def test_to_openai_and_dict_round_trip():
    (spec,) = import_mcp_tools(mcp_doc(mcp_tool()), domain="weather")
    assert spec.to_openai() == {
        "type": "function",
        "function": {"name": "get_forecast", "description": "Forecast", "parameters": WEATHER_SCHEMA},
    }
    assert ToolSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert import_openai_tools([spec.to_openai()])[0].parameters == spec.parameters


@pytest.mark.parametrize(
    ("tool", "field", "message"),
    [
        (mcp_tool(name="get forecast"), "name", "name must match"),
        (mcp_tool(name="9lives"), "name", "name must match"),
        (mcp_tool(name="x" * 65), "name", "name must match"),
        (mcp_tool(description="  "), "description", "description must be a non-empty string"),
        (mcp_tool(schema={"type": "objekt"}), "parameters", "not a valid JSON Schema at type"),
        (mcp_tool(schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": "one"}}}),
         "parameters", "not a valid JSON Schema at properties/n/minimum"),
        (mcp_tool(schema={"type": "object", "required": "city"}), "parameters",
         "not a valid JSON Schema at required"),
        (mcp_tool(schema={"type": "array", "items": {"type": "string"}}), "parameters",
         "must have \"type\": \"object\""),
        (mcp_tool(schema={"type": "object", "properties": {}, "required": ["city"]}), "parameters",
         "undeclared properties ['city']"),
    ],
)
def test_bad_tool_is_rejected_naming_tool_and_field(tool, field, message):
    with pytest.raises(ToolSpecError) as caught:
        import_mcp_tools(mcp_doc(mcp_tool("first_ok"), tool))
    assert caught.value.field == field
    assert message in str(caught.value)
    assert "entry #1" in str(caught.value)


def test_bad_envelopes_are_rejected_with_their_location():
    with pytest.raises(ToolSpecError, match="invalid at tools/0: 'inputSchema' is a required property"):
        import_mcp_tools(mcp_doc({"name": "no_schema", "description": "d"}))
    with pytest.raises(ToolSpecError, match=r"invalid at \(root\): 'tools' is a required property"):
        import_mcp_tools({"tool": []})
    with pytest.raises(ToolSpecError, match="OpenAI tool #0: invalid at type"):
        import_openai_tools([{"type": "retrieval", "function": {"name": "x"}}])
    with pytest.raises(ToolSpecError, match="OpenAI tool #0: invalid at function/parameters"):
        import_openai_tools([{"type": "function", "function": {"name": "x", "parameters": "none"}}])


def test_duplicate_names_in_one_document_are_rejected():
    with pytest.raises(ToolSpecError, match="duplicate tool name 'get_forecast'"):
        import_mcp_tools(mcp_doc(mcp_tool(), mcp_tool()))


def test_tool_spec_error_is_a_value_error_and_an_invalid_argument():
    with pytest.raises(ValueError) as caught:
        ToolSpec("ok_name", "d", {"type": "object"}, source="scraped")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "source must be one of" in str(caught.value)


def test_load_tool_file_detects_format_and_uses_the_stem_as_domain(tmp_path):
    mcp_path = tmp_path / "forecasts.json"
    mcp_path.write_text(json.dumps(mcp_doc(mcp_tool())))
    openai_path = tmp_path / "maps.json"
    openai_path.write_text(json.dumps([{"type": "function", "function": {
        "name": "route", "description": "Route between places", "parameters": {"type": "object"}}}]))
    (mcp_spec,) = load_tool_file(mcp_path)
    (openai_spec,) = load_tool_file(openai_path, domain="navigation")
    assert (mcp_spec.source, mcp_spec.domain) == ("mcp", "forecasts")
    assert (openai_spec.source, openai_spec.domain) == ("openai", "navigation")


def test_load_tool_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"tools": [')
    with pytest.raises(ToolSpecError, match=r"broken\.json: not valid JSON \(line 1"):
        load_tool_file(broken)
    bad_schema = tmp_path / "bad_schema.json"
    bad_schema.write_text(json.dumps(mcp_doc(mcp_tool(schema={"type": "object", "required": ["nope"]}))))
    with pytest.raises(ToolSpecError, match=r"bad_schema\.json: entry #0: tool 'get_forecast': parameters"):
        load_tool_file(bad_schema)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"title": "x"}]))
    with pytest.raises(ToolSpecError, match=r"unknown\.json: tool #0: cannot tell the format"):
        load_tool_file(unknown)
    with pytest.raises(ToolSpecError, match=r"missing\.json: cannot read tool file"):
        load_tool_file(tmp_path / "missing.json")


def test_bundled_fixtures_are_valid_real_tools_in_both_formats():
    specs = load_fixture_tools()
    assert len(specs) >= 15
    assert {spec.source for spec in specs} == {"mcp", "openai"}
    assert len({spec.domain for spec in specs}) >= 4
    assert len({normalize_tool_name(spec.name) for spec in specs}) == len(specs)


def test_normalized_names_fold_case_separators_and_camel_case():
    assert normalize_tool_name("getWeather") == normalize_tool_name("get-weather") == "get_weather"
    assert normalize_tool_name("Get__Weather_") == "get_weather"
    assert normalize_tool_name("get_weather") != normalize_tool_name("get_weathers")


def synthetic(name: str, description: str = "Synthetic tool") -> ToolSpec:
    return ToolSpec(name, description, {"type": "object"}, "synthetic", domain="demo")


def test_repository_keeps_first_but_real_replaces_synthetic_and_persists(tmp_path):
    repo = ToolRepository()
    real = import_mcp_tools(mcp_doc(mcp_tool("getForecast")), domain="weather")[0]
    assert repo.add(synthetic("get_forecast", "first synthetic"))
    assert not repo.add(synthetic("get-forecast", "second synthetic"))
    assert repo.add(real)
    assert not repo.add(synthetic("GetForecast"))
    assert repo.extend([synthetic("plan_route"), synthetic("plan_route")]) == 1
    assert [spec.name for spec in repo.list()] == ["getForecast", "plan_route"]
    assert repo.get("get_forecast") == real and "GET_FORECAST" in repo
    assert repo.by_domain("demo") == [repo.get("plan_route")] and repo.domains() == ["demo", "weather"]

    path = tmp_path / "tools.jsonl"
    repo.save(path)
    assert len(path.read_text().splitlines()) == 2
    assert ToolRepository.load(path).list() == repo.list()
    assert load_tool_file(path) == repo.list()


def test_repository_load_reports_the_bad_line(tmp_path):
    path = tmp_path / "tools.jsonl"
    good = synthetic("fine_tool").to_dict()
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "name": "bad name"}) + "\n")
    with pytest.raises(ToolSpecError, match=r"tools\.jsonl: line 2: tool 'bad name': name must match"):
        ToolRepository.load(path)
