"""Stage 1: tool dedup by normalised name and by embedding similarity."""

from __future__ import annotations

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.synth.dedup import dedup_tools
from k2rl.synth.tools import ToolSpec

SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}}


def tool(name: str, description: str, source: str = "synthetic") -> ToolSpec:
    return ToolSpec(name, description, SCHEMA, source, domain="weather")


REAL_WEATHER = tool("get_current_weather", "Get the current weather at a place: temperature, feels-like "
                    "temperature, humidity, wind and a short condition summary.", source="openai")
PARAPHRASE = tool("fetch_weather_now", "Return the present weather conditions for a location, including "
                  "temperature, humidity and wind.")
FORECAST = tool("get_weather_forecast", "Get a daily weather forecast for the next days at a place: minimum "
                "and maximum temperature, chance of rain, conditions.", source="openai")
FLIGHTS = tool("book_flight", "Book a flight between two airports on a given date for a passenger.")


def test_name_duplicates_are_dropped_keeping_the_first():
    first, second = tool("getWeather", "one"), tool("get_weather", "another wording entirely")
    result = dedup_tools([first, second, FLIGHTS], threshold=None)
    assert result.kept == [first, FLIGHTS]
    assert [(d.tool, d.kept_instead, d.reason) for d in result.dropped] == [(second, first, "name")]


def test_real_tools_win_over_synthetic_ones_even_when_listed_later():
    synthetic_twin = tool("get_current_weather", "synthetic copy")
    result = dedup_tools([synthetic_twin, FLIGHTS, REAL_WEATHER], threshold=None)
    assert result.kept == [FLIGHTS, REAL_WEATHER]
    assert result.dropped[0].tool is synthetic_twin


def test_paraphrases_are_dropped_by_embedding_but_related_distinct_tools_stay():
    result = dedup_tools([PARAPHRASE, REAL_WEATHER, FORECAST, FLIGHTS])
    assert result.kept == [REAL_WEATHER, FORECAST, FLIGHTS]
    (dropped,) = result.dropped
    assert (dropped.tool, dropped.kept_instead, dropped.reason) == (PARAPHRASE, REAL_WEATHER, "embedding")
    assert 0.8 <= dropped.similarity < 1.0


def test_threshold_controls_embedding_dedup():
    specs = [REAL_WEATHER, PARAPHRASE, FORECAST]
    assert dedup_tools(specs, threshold=None).kept == specs
    assert dedup_tools(specs, threshold=0.99).kept == specs
    assert dedup_tools(specs, threshold=0.3).kept == [REAL_WEATHER]
    with pytest.raises(InvalidArgument, match="threshold"):
        dedup_tools(specs, threshold=1.5)


def test_empty_input():
    result = dedup_tools([])
    assert result.kept == [] and result.dropped == []
