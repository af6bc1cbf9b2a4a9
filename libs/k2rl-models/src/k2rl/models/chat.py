"""Chat templates (rendered as HF transformers does) and K2's tool-call token format.

K2 report Appendix B: tools are declared in a ``tool_declare`` system message, an
assistant turn invokes them inside a tool-call section, each call identified as
``functions.{name}:{counter}`` (counter over the whole dialog, from 0), and results come
back as ``tool`` messages keyed by that id. The report's figure spells some tokens
slightly differently (``<|im_begin|>``, ``<|tool_arguments_begin|>``); we use the names of
the released Kimi-K2 tokenizer, which vLLM's ``kimi_k2`` tool parser also expects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

IM_SYSTEM = "<|im_system|>"
IM_USER = "<|im_user|>"
IM_ASSISTANT = "<|im_assistant|>"
IM_MIDDLE = "<|im_middle|>"
IM_END = "<|im_end|>"
TOOL_CALLS_BEGIN = "<|tool_calls_section_begin|>"
TOOL_CALLS_END = "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN = "<|tool_call_begin|>"
TOOL_CALL_ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"

K2_CHAT_TOKENS = (
    IM_END,
    IM_USER,
    IM_ASSISTANT,
    IM_SYSTEM,
    IM_MIDDLE,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_END,
)

# The K2 layout. Whitespace control keeps the output free of template newlines; the only
# newline is the one K2 puts between a tool result's header and its content.
K2_CHAT_TEMPLATE = (
    "{%- if tools -%}"
    "<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>"
    "{%- endif -%}"
    "{%- set ns = namespace(call_index=0) -%}"
    "{%- for message in messages -%}"
    "{%- set role = message['role'] -%}"
    "{%- if role == 'system' -%}<|im_system|>system<|im_middle|>"
    "{%- elif role == 'user' -%}<|im_user|>user<|im_middle|>"
    "{%- elif role == 'assistant' -%}<|im_assistant|>assistant<|im_middle|>"
    "{%- elif role == 'tool' -%}<|im_system|>tool<|im_middle|>"
    "{%- else -%}{{ raise_exception('unknown role: ' + role) }}"
    "{%- endif -%}"
    "{%- if role == 'tool' -%}## Return of {{ message['tool_call_id'] }}\n{{ message['content'] }}"
    "{%- elif message['content'] -%}{{ message['content'] }}"
    "{%- endif -%}"
    "{%- if role == 'assistant' and message['tool_calls'] -%}"
    "<|tool_calls_section_begin|>"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set fn = call['function'] -%}"
    "{%- set call_id = call['id'] if call['id'] "
    "else 'functions.' + fn['name'] + ':' + ns.call_index|string -%}"
    "<|tool_call_begin|>{{ call_id }}<|tool_call_argument_begin|>"
    "{{ fn['arguments'] if fn['arguments'] is string else fn['arguments'] | tojson }}"
    "<|tool_call_end|>"
    "{%- set ns.call_index = ns.call_index + 1 -%}"
    "{%- endfor -%}"
    "<|tool_calls_section_end|>"
    "{%- endif -%}"
    "<|im_end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators=None,
    sort_keys: bool = False,
) -> str:
    # HF overrides jinja's tojson (which HTML-escapes); do the same so renders match.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    """The environment HF ``apply_chat_template`` uses: sandboxed, trim/lstrip blocks."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    **variables: Any,
) -> str:
    """Render ``messages`` (OpenAI chat format) with a jinja chat template."""
    return _compile(template).render(
        messages=[dict(m) for m in messages],
        tools=list(tools) if tools else None,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


@dataclass(frozen=True)
class ToolCall:
    id: str  # functions.{name}:{counter}
    name: str
    arguments: str  # JSON text as generated (validated by the caller against the tool schema)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


_SECTION = re.compile(
    re.escape(TOOL_CALLS_BEGIN) + r"(.*?)(?:" + re.escape(TOOL_CALLS_END) + r"|$)", re.DOTALL
)
_CALL = re.compile(
    re.escape(TOOL_CALL_BEGIN)
    + r"\s*(?P<id>[^<]+?)\s*"
    + re.escape(TOOL_CALL_ARGUMENT_BEGIN)
    + r"(?P<args>.*?)"
    + re.escape(TOOL_CALL_END),
    re.DOTALL,
)
_CALL_ID = re.compile(r"^(?:functions\.)?(?P<name>.+):(?P<index>\d+)$")


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split an assistant completion into (content, tool calls).

    Content is the text before the tool-call section (with a trailing ``<|im_end|>``
    removed); calls whose id does not have the ``functions.{name}:{n}`` form are dropped.
    """
    match = _SECTION.search(text)
    content = text if match is None else text[: match.start()]
    content = content.removesuffix(IM_END)
    calls: list[ToolCall] = []
    if match is not None:
        for call in _CALL.finditer(match.group(1)):
            call_id = call.group("id").strip()
            id_match = _CALL_ID.match(call_id)
            if id_match is None:
                continue
            calls.append(
                ToolCall(
                    id=call_id, name=id_match.group("name"), arguments=call.group("args").strip()
                )
            )
    return content, calls
