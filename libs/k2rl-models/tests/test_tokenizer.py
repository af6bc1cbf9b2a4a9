"""Byte tokenizer, HF tokenizer.json loading, chat templates and K2 tool-call tokens."""

from __future__ import annotations

import json

import pytest

from k2rl.models.chat import K2_CHAT_TEMPLATE, K2_CHAT_TOKENS, ToolCall, parse_tool_calls
from k2rl.models.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get weather for a location and date",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]
DIALOG = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Weather in Beijing and Paris? 天气"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Beijing"}'},
            },
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"location": "Paris"}},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
    {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "rain"},
]


def test_byte_tokenizer_round_trips_text_and_special_tokens():
    tok = load_tokenizer("k2-nano")
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 512
    text = "héllo <|im_end|> wörld 🙂"
    ids = tok.encode(text)
    assert tok.token_to_id("<|im_end|>") in ids and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "héllo  wörld 🙂"
    assert tok.encode("a", add_special_tokens=True) == [tok.bos_token_id, 97]
    assert tok.stop_token_ids == [tok.eos_token_id, tok.token_to_id("<|im_end|>")]
    # preset config and tokenizer agree on the special ids
    from k2rl.models import get_preset

    config = get_preset("k2-nano")
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )


def test_k2_chat_template_renders_tool_calls_in_k2_format():
    tok = ByteTokenizer()
    text = tok.apply_chat_template(DIALOG, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_system|>tool_declare<|im_middle|>[{")
    assert (
        "<|im_assistant|>assistant<|im_middle|>Checking.<|tool_calls_section_begin|>"
        "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
        '{"location": "Beijing"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>"
        '{"location": "Paris"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
    ) in text
    assert (
        "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:1\nrain<|im_end|>" in text
    )
    assert text.endswith("<|im_assistant|>assistant<|im_middle|>")
    ids = tok.apply_chat_template(DIALOG, tools=TOOLS)
    assert all(tok.token_to_id(t) is not None for t in K2_CHAT_TOKENS)
    assert tok.token_to_id("<|tool_call_begin|>") in ids


def test_tool_calls_parse_back_from_a_completion():
    completion = (
        "Let me look.<|tool_calls_section_begin|>"
        "<|tool_call_begin|> functions.get_weather:0 <|tool_call_argument_begin|>"
        '{"location": "Beijing"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.calc:1<|tool_call_argument_begin|>{}<|tool_call_end|>"
        "<|tool_call_begin|>not-an-id<|tool_call_argument_begin|>{}<|tool_call_end|>"
        "<|tool_calls_section_end|><|im_end|>"
    )
    content, calls = parse_tool_calls(completion)
    assert content == "Let me look."
    assert calls == [
        ToolCall("functions.get_weather:0", "get_weather", '{"location": "Beijing"}'),
        ToolCall("functions.calc:1", "calc", "{}"),
    ]
    assert calls[0].to_openai()["function"]["name"] == "get_weather"
    assert parse_tool_calls("plain answer<|im_end|>") == ("plain answer", [])


@pytest.fixture
def hf_tokenizer_dir(tmp_path):
    """A byte-level BPE tokenizer.json trained locally, with K2 specials and chat template."""
    tokenizers = pytest.importorskip("tokenizers")
    specials = ["[BOS]", "[EOS]", *K2_CHAT_TOKENS]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        ["the weather in Beijing is sunny", "get_weather location Paris rain"] * 20, trainer
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "[BOS]",
                "eos_token": {"__type": "AddedToken", "content": "[EOS]", "special": True},
                "chat_template": K2_CHAT_TEMPLATE,
            }
        )
    )
    return tmp_path


def test_hf_tokenizer_json_with_chat_template(hf_tokenizer_dir):
    tok = load_tokenizer(hf_tokenizer_dir)
    assert isinstance(tok, HFTokenizer)
    assert tok.bos_token_id == tok.token_to_id("[BOS]") and tok.eos_token_id == tok.token_to_id(
        "[EOS]"
    )
    assert tok.stop_token_ids == [tok.eos_token_id, tok.token_to_id("<|im_end|>")]
    text = "the weather in Beijing 天气"
    assert tok.decode(tok.encode(text)) == text
    ids = tok.apply_chat_template(DIALOG, tools=TOOLS, add_generation_prompt=True)
    assert tok.token_to_id("<|tool_calls_section_begin|>") in ids
    assert tok.decode(ids) == ByteTokenizer().apply_chat_template(
        DIALOG, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )


def test_hf_tokenizer_matches_transformers_apply_chat_template(hf_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    ours = load_tokenizer(hf_tokenizer_dir)
    kwargs = dict(tools=TOOLS, add_generation_prompt=True)
    assert ours.apply_chat_template(
        DIALOG, tokenize=False, **kwargs
    ) == reference.apply_chat_template(DIALOG, tokenize=False, **kwargs)
    expected_ids = reference.apply_chat_template(DIALOG, tokenize=True, **kwargs)
    if isinstance(expected_ids, dict) or hasattr(expected_ids, "input_ids"):
        expected_ids = expected_ids["input_ids"]
    assert ours.apply_chat_template(DIALOG, **kwargs) == list(expected_ids)

