"""Chat-template rendering: byte-for-byte against the golden file and transformers itself."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from smolchat.chat.template import compile_template, pinned_time, render_chat_template, set_clock
from smolchat.chat.thinking import (
    ThinkContent,
    effective_thinking,
    history_for_template,
    prompt_opens_reasoning,
    resolve_thinking,
)
from smolchat.errors import TemplateError

TODAY = datetime(2025, 7, 10, 12, 0, 0)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "Ville / 都市"}},
            "required": ["city"],
        },
    },
}
PY_TOOL = {"name": "add", "description": "add(a: int, b: int) -> int", "args": ["a", "b"]}

# (name, messages, add_generation_prompt, template kwargs)
CONVERSATIONS = [
    ("user only", [{"role": "user", "content": "Hi there!"}], True, {}),
    (
        "system, no_think kwarg",
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Capital of France?"},
        ],
        True,
        {"enable_thinking": False},
    ),
    (
        "system /think flag beats kwarg",
        [
            {"role": "system", "content": "Be careful. /think"},
            {"role": "user", "content": "2+2?"},
        ],
        True,
        {"enable_thinking": False},
    ),
    (
        "system /no_think flag",
        [
            {"role": "system", "content": "/no_think Be quick."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
        ],
        True,
        {},
    ),
    (
        "system override",
        [
            {"role": "system", "content": "Raw system text /system_override"},
            {"role": "user", "content": "Hello"},
        ],
        True,
        {},
    ),
    (
        "xml_tools",
        [{"role": "user", "content": "Weather in Paris?"}],
        True,
        {"xml_tools": [WEATHER_TOOL]},
    ),
    (
        "tools argument",
        [{"role": "user", "content": "Weather in Oslo?"}],
        True,
        {"tools": [WEATHER_TOOL]},
    ),
    (
        "python_tools and xml_tools",
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Add 2 and 3"},
        ],
        True,
        {"python_tools": [PY_TOOL], "xml_tools": [WEATHER_TOOL]},
    ),
    (
        "tool messages",
        [
            {"role": "user", "content": "Weather in Rome?"},
            {
                "role": "assistant",
                "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
                "</tool_call>",
            },
            {"role": "tool", "content": '{"temp": 21, "sky": "clear"}'},
        ],
        True,
        {"xml_tools": [WEATHER_TOOL]},
    ),
    (
        "multi-turn with reasoning, think",
        [
            {"role": "user", "content": "What is 7*6?"},
            {"role": "assistant", "content": "<think>\n7*6 = 42\n</think>\n42"},
            {"role": "user", "content": "And 6*7?"},
        ],
        True,
        {"enable_thinking": True},
    ),
    (
        "multi-turn with reasoning, no_think",
        [
            {"role": "system", "content": "Math helper."},
            {"role": "user", "content": "What is 7*6?"},
            {"role": "assistant", "content": "\n\n42"},
            {"role": "user", "content": "And 6*7?"},
        ],
        True,
        {"enable_thinking": False},
    ),
    (
        "no generation prompt",
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ],
        False,
        {},
    ),
    (
        "unicode",
        [
            {"role": "system", "content": "Réponds en français 🇫🇷."},
            {"role": "user", "content": "Émilie a mangé une pomme 🍎 à Zürich. 日本語のテキスト。"},
            {"role": "assistant", "content": "Très bien — 👍"},
            {"role": "user", "content": "Ω≈ç√∫ \u200b zero-width, tab\tand\r\nCRLF"},
        ],
        True,
        {},
    ),
    (
        "None content and reasoning_content key",
        [
            {"role": "user", "content": "Call a tool"},
            {"role": "assistant", "content": None, "reasoning_content": "hidden", "tool_calls": []},
            {"role": "user", "content": "ok"},
        ],
        True,
        {"documents": [{"title": "T", "text": "doc text"}]},
    ),
]


@pytest.fixture(scope="module")
def hf_tok(tok_dir, smollm3_fixtures):
    transformers = pytest.importorskip("transformers")
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tok_dir / "tokenizer.json"), **config
    )
    hf.chat_template = (smollm3_fixtures / "chat_template.jinja").read_text()
    return hf


@pytest.fixture
def pinned(monkeypatch):
    """Pin ``strftime_now`` to TODAY for us and for transformers."""
    import transformers.utils.chat_template_utils as ctu

    class _Clock:
        @staticmethod
        def now():
            return TODAY

    monkeypatch.setattr(ctu, "datetime", _Clock)
    with pinned_time(TODAY):
        yield


# ----- golden and transformers parity ------------------------------------------------------
def test_golden_render_byte_for_byte(smollm3_fixtures):
    golden = json.loads((smollm3_fixtures / "golden_render.json").read_text())
    template = (smollm3_fixtures / "chat_template.jinja").read_text()
    day = datetime.strptime(golden["today"], "%d %B %Y")
    with pinned_time(day):
        out = render_chat_template(
            template, golden["messages"], special_tokens={}, **golden["template_kwargs"]
        )
    assert out == golden["expected"]


def test_tokenizer_golden_render(tok, smollm3_fixtures):
    golden = json.loads((smollm3_fixtures / "golden_render.json").read_text())
    with pinned_time(datetime(2025, 7, 10)):
        out = tok.apply_chat_template(golden["messages"], **golden["template_kwargs"])
    assert out == golden["expected"]


@pytest.mark.parametrize(
    "messages,add_gen,kwargs", [c[1:] for c in CONVERSATIONS], ids=[c[0] for c in CONVERSATIONS]
)
def test_matches_transformers(tok, hf_tok, pinned, messages, add_gen, kwargs):
    ours = tok.apply_chat_template(messages, add_generation_prompt=add_gen, **kwargs)
    theirs = hf_tok.apply_chat_template(
        messages, add_generation_prompt=add_gen, tokenize=False, **kwargs
    )
    assert ours == theirs
    their_ids = hf_tok.apply_chat_template(
        messages, add_generation_prompt=add_gen, tokenize=True, return_dict=False, **kwargs
    )
    assert tok.apply_chat_template(
        messages, add_generation_prompt=add_gen, tokenize=True, **kwargs
    ) == list(their_ids)
    sanitized = tok.encode_chat(messages, add_generation_prompt=add_gen, **kwargs)
    if not any(t in json.dumps(messages, ensure_ascii=False) for t in tok.control_tokens()):
        assert sanitized == list(their_ids)  # ordinary text: sanitizing changes nothing
    else:  # raw "<think>" typed into a message stays text (stored reasoning uses ThinkContent)
        assert sanitized != list(their_ids)
        assert tok.decode(sanitized) == ours


def test_render_features_really_differ(tok, pinned):
    """The conversations above exercise different template branches (guards the parity test)."""
    renders = {
        name: tok.apply_chat_template(m, add_generation_prompt=g, **kw)
        for name, m, g, kw in CONVERSATIONS
    }
    assert "Reasoning Mode: /no_think" in renders["system, no_think kwarg"]
    assert "Reasoning Mode: /think" in renders["system /think flag beats kwarg"]
    assert renders["system override"].startswith("<|im_start|>system\nRaw system text<|im_end|>")
    assert "<tools>" in renders["tools argument"] and "get_weather" in renders["tools argument"]
    assert "stateful Jupyter" in renders["python_tools and xml_tools"]
    assert renders["tool messages"].count("<|im_start|>user") == 2
    assert renders["system, no_think kwarg"].endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n"
    )
    assert renders["no generation prompt"].endswith("<|im_end|>\n")
    assert "Today Date: 10 July 2025" in renders["user only"]


def test_extra_kwargs_override_special_tokens(smollm3_fixtures):
    out = render_chat_template(
        "{{ eos_token }}|{{ bos_token }}",
        [{"role": "user", "content": "x"}],
        add_generation_prompt=False,
        special_tokens={"eos_token": "<e>", "bos_token": "<b>"},
        bos_token="<B2>",
    )
    assert out == "<e>|<B2>"


def test_environment_features():
    template = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
        "{{ {'k': 'é<>', 'a': [1, 2]} | tojson }}{{ dict(x=1) | tojson }}"
        "{% set ns = namespace(n=0) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}"
    )
    msgs = [{"role": "user", "content": c} for c in "abc"]
    out = render_chat_template(template, msgs, add_generation_prompt=False)
    assert out == '[a][b]{"k": "é<>", "a": [1, 2]}{"x": 1}1'
    # trim_blocks / lstrip_blocks: block lines leave no blank lines or indentation behind
    out = render_chat_template(
        "A\n  {% if true %}\nB\n  {% endif %}\nC", msgs, add_generation_prompt=False
    )
    assert out == "A\nB\nC"


def test_strftime_now_uses_clock_and_can_be_pinned():
    template = "{{ strftime_now('%Y-%m-%d') }}"
    msgs = [{"role": "user", "content": "x"}]
    with pinned_time(datetime(2001, 2, 3)):
        assert render_chat_template(template, msgs, add_generation_prompt=False) == "2001-02-03"
    set_clock(lambda: datetime(1999, 12, 31))
    try:
        assert render_chat_template(template, msgs, add_generation_prompt=False) == "1999-12-31"
    finally:
        set_clock(None)
    before = datetime.now().strftime("%Y-%m-%d")
    now = render_chat_template(template, msgs, add_generation_prompt=False)
    assert now in {before, datetime.now().strftime("%Y-%m-%d")}


def test_templates_are_compiled_once():
    source = "{{ messages[0].content }}-cached"
    assert compile_template(source) is compile_template(source)


# ----- failures become TemplateError with one line -----------------------------------------
@pytest.mark.parametrize(
    "template,needle",
    [
        ("{{ raise_exception('Only user and assistant roles!') }}", "refused these messages: Only"),
        ("{% if %}", "syntax error"),
        ("{{ messages[0].content.nope() }}", "has no attribute"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", ""),
        ("{{ messages.append(1) }}", "sandbox"),
        ("{% set ns = namespace(_x=1) %}{{ ns._x }}", "underscore"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 'a' + 1 }}", ""),
    ],
)
def test_template_failures_become_one_line_errors(template, needle):
    with pytest.raises(TemplateError) as info:
        render_chat_template(
            template, [{"role": "user", "content": "x"}], add_generation_prompt=True
        )
    message = str(info.value)
    assert "\n" not in message and message
    assert needle.lower() in message.lower()


def test_missing_template_and_bad_inputs():
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(TemplateError, match="no chat template"):
        render_chat_template(None, msgs, add_generation_prompt=True)
    with pytest.raises(TemplateError, match="at least one message"):
        render_chat_template("x", [], add_generation_prompt=True)
    with pytest.raises(TemplateError, match="Tools"):
        render_chat_template("x", msgs, add_generation_prompt=True, tools=[print])


# ----- thinking modes ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,session,expected",
    [
        ("What is 2+2? /no_think", True, ("What is 2+2?", False)),
        ("What is 2+2?\n/think  ", False, ("What is 2+2?", True)),
        ("/no_think", True, ("", False)),
        ("plain question", True, ("plain question", True)),
        ("plain question", False, ("plain question", False)),
        ("use the path a/think", False, ("use the path a/think", False)),
        ("/think about this", False, ("/think about this", False)),
        ("why /no_think here?", True, ("why /no_think here?", True)),
    ],
)
def test_resolve_thinking(text, session, expected):
    assert resolve_thinking(text, session) == expected


def test_per_turn_flag_gives_the_right_generation_prompt(tok, pinned):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text, thinking = resolve_thinking("Quick: 2+2? /no_think", session_thinking=True)
    msgs = [*history, {"role": "user", "content": text}]
    prompt = tok.apply_chat_template(msgs, enable_thinking=thinking)
    assert prompt.endswith(
        "<|im_start|>user\nQuick: 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"
    )
    assert "/no_think<|im_end|>" not in prompt
    # the template itself ignores a flag left in a user message: the prompt would stay in think
    kept = tok.apply_chat_template(
        [*history, {"role": "user", "content": "Quick: 2+2? /no_think"}], enable_thinking=True
    )
    assert kept.endswith("/no_think<|im_end|>\n<|im_start|>assistant\n")
    text, thinking = resolve_thinking("Explain. /think", session_thinking=False)
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], enable_thinking=thinking)
    assert prompt.endswith("<|im_start|>user\nExplain.<|im_end|>\n<|im_start|>assistant\n")
    assert "Reasoning Mode: /think" in prompt


def test_effective_thinking_follows_system_flags():
    user = {"role": "user", "content": "x"}
    assert effective_thinking([user], True) is True
    assert effective_thinking([{"role": "system", "content": "a /no_think"}, user], True) is False
    assert effective_thinking([{"role": "system", "content": "a /think"}, user], False) is True
    assert effective_thinking([{"role": "system", "content": "plain"}, user], False) is False


HISTORY = [
    {"role": "user", "content": "What is 7*6?"},
    {
        "role": "assistant",
        "content": "42",
        "reasoning": "7*6 is 42",
        "stats": {"generated_tokens": 9},
        "finish_reason": "stop",
    },
    {"role": "user", "content": "Thanks"},
]


def test_history_for_template_think_mode(tok, pinned):
    msgs = history_for_template(HISTORY, enable_thinking=True)
    assert msgs[1] == {"role": "assistant", "content": "<think>\n7*6 is 42\n</think>\n42"}
    assert isinstance(msgs[1]["content"], ThinkContent)
    assert HISTORY[1]["reasoning"] == "7*6 is 42"  # input untouched
    prompt = tok.apply_chat_template(msgs, enable_thinking=True)
    assert "<|im_start|>assistant\n<think>\n7*6 is 42\n</think>\n42<|im_end|>" in prompt
    ids = tok.encode_chat(msgs, enable_thinking=True)
    assert ids == tok.encode(prompt)
    # the think tags of stored reasoning are control tokens, those a user types are text
    msgs.append({"role": "user", "content": "Do you use <think> tags?"})
    prompt = tok.apply_chat_template(msgs, enable_thinking=True)
    ids = tok.encode_chat(msgs, enable_thinking=True)
    think, end = tok.token_to_id("<think>"), tok.token_to_id("</think>")
    naive = tok.encode(prompt)
    # system prompt text + stored reasoning; the user's "<think>" is not a token
    assert (ids.count(think), ids.count(end)) == (2, 2)
    assert (naive.count(think), naive.count(end)) == (3, 2)
    assert tok.decode(ids) == prompt


def test_history_for_template_no_think_mode(tok, pinned):
    msgs = history_for_template(HISTORY, enable_thinking=False)
    assert msgs[1] == {"role": "assistant", "content": "42"}
    prompt = tok.apply_chat_template(msgs, enable_thinking=False)
    assert "<|im_start|>assistant\n<think>\n\n</think>\n42<|im_end|>" in prompt
    # a /no_think system flag wins over enable_thinking=True: no reasoning either
    sys_msgs = history_for_template(
        [{"role": "system", "content": "terse /no_think"}, *HISTORY], enable_thinking=True
    )
    assert sys_msgs[2]["content"] == "42"


def test_history_for_template_reasoning_content_templates():
    template = "{% for m in messages %}{{ m.reasoning_content }}|{{ m.content }};{% endfor %}"
    msgs = history_for_template(HISTORY, enable_thinking=True, template=template)
    assert msgs[1] == {"role": "assistant", "content": "42", "reasoning_content": "7*6 is 42"}
    out = render_chat_template(template, msgs, add_generation_prompt=False)
    assert "7*6 is 42|42;" in out


def test_prompt_opens_reasoning(tok, pinned):
    user = [{"role": "user", "content": "Hi"}]
    assert not prompt_opens_reasoning(tok.apply_chat_template(user, enable_thinking=True))
    assert not prompt_opens_reasoning(tok.apply_chat_template(user, enable_thinking=False))
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<think>\nunfinished reasoning of an old turn<|im_end|>\nx")


def test_pinned_time_is_per_thread():
    import threading

    msgs = [{"role": "user", "content": "x"}]
    template = "{{ strftime_now('%Y') }}"
    seen = []
    with pinned_time(datetime(1990, 1, 1)):
        worker = threading.Thread(
            target=lambda: seen.append(
                render_chat_template(template, msgs, add_generation_prompt=False)
            )
        )
        worker.start()
        worker.join()
        assert render_chat_template(template, msgs, add_generation_prompt=False) == "1990"
    assert seen and seen[0] != "1990"
