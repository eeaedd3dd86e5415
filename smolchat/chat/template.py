"""Render a model's Jinja chat template exactly as transformers' ``apply_chat_template`` does.

The environment mirrors transformers: ``ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True)`` with the ``loopcontrols`` extension, a ``{% generation %}`` block tag that
renders its body, the globals ``raise_exception`` and ``strftime_now``, and a ``tojson`` filter
that does not escape HTML. The inputs are prepared the same way too: keys whose value is ``None``
are dropped from messages, reasoning fields are aliased (``reasoning_content`` / ``thinking``),
and everything the template sees is rebuilt from plain JSON types. Templates are compiled once.

Any failure inside the template (``raise_exception``, a Jinja error, a sandbox violation, a
Python error from a filter) becomes a :class:`~smolchat.errors.TemplateError` with one line.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from smolchat.errors import TemplateError

__all__ = [
    "compile_template",
    "pinned_time",
    "render_chat_template",
    "set_clock",
]

# The clock behind ``strftime_now`` (the SmolLM3 template prints today's date). ``set_clock``
# replaces it process-wide; ``pinned_time`` overrides it in the current thread/context only.
_clock: Callable[[], datetime] = datetime.now
_pinned: ContextVar[datetime | None] = ContextVar("smolchat_pinned_time", default=None)

# Names a message's reasoning may be given under; templates conventionally read the first.
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Make ``strftime_now`` read ``clock()`` instead of the local time (``None`` restores it)."""
    global _clock
    _clock = clock or datetime.now


@contextlib.contextmanager
def pinned_time(when: datetime) -> Iterator[None]:
    """Within the block (this thread only), ``strftime_now`` formats ``when``: reproducible
    renderings, and a chat whose system prompt keeps its date (so its KV cache stays valid)."""
    token = _pinned.set(when)
    try:
        yield
    finally:
        _pinned.reset(token)


class _Raised(jinja2.exceptions.TemplateError):
    """The template called ``raise_exception``."""


def _raise_exception(message: Any) -> None:
    raise _Raised(str(message))


def _strftime_now(fmt: str) -> str:
    pinned = _pinned.get()
    return (pinned if pinned is not None else _clock()).strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _template_dict(*args: Any, **kwargs: Any) -> dict:
    """``dict(...)`` for templates, without exposing the ``dict`` type itself."""
    return dict(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names (no route to Python internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # first positional is self, as in Jinja
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"namespace attribute {name!r} is not allowed (underscore names are blocked)"
            )


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _template_dict
    env.globals["namespace"] = _Namespace
    return env


@lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """Compile ``template`` once (cached); a syntax error becomes :class:`TemplateError`."""
    try:
        return _environment().from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TemplateError(
            f"The chat template has a syntax error (line {exc.lineno}): {_one_line(exc)}; "
            "fix the template or use the model's own."
        ) from None


def _one_line(exc: BaseException) -> str:
    """The error on one line, at most 300 characters, without a final period (callers add
    their own punctuation)."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _plain(value: Any) -> Any:
    """Rebuild ``value`` from plain JSON types so the sandbox only ever sees those."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _prepare_messages(messages: Any) -> list[dict]:
    """Drop ``None`` values, copy to plain data, alias reasoning fields (as transformers does)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TemplateError("A chat needs at least one message; nothing to render.")
    prepared = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TemplateError(f"Chat messages must be dicts, got {type(message).__name__}.")
        message = _plain({k: v for k, v in message.items() if v is not None})
        reasoning = next((message[k] for k in _REASONING_KEYS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


def render_chat_template(
    template: str | None,
    messages: list[dict],
    *,
    add_generation_prompt: bool,
    special_tokens: Mapping[str, Any] | None = None,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    **kwargs: Any,
) -> str:
    """Render ``messages`` with ``template`` like ``apply_chat_template(tokenize=False)``.

    ``special_tokens`` (``bos_token``, ``eos_token``, ...) become template variables; ``kwargs``
    (``enable_thinking``, ``xml_tools``, ``python_tools``, ...) are passed through and win over
    special tokens of the same name. Raises :class:`TemplateError` on any template failure.
    """
    if not template:
        raise TemplateError(
            "This model has no chat template; pick a chat (instruct) model or supply a template."
        )
    compiled = compile_template(template)
    chat = _prepare_messages(messages)
    if tools is not None and not all(isinstance(t, Mapping) for t in tools):
        raise TemplateError("Tools must be given as JSON-schema dicts.")
    if documents is not None and not all(isinstance(d, Mapping) for d in documents):
        raise TemplateError("Documents must be dicts with 'title' and 'text' keys.")
    variables = {**dict(special_tokens or {}), **_plain(kwargs)}
    try:
        return compiled.render(
            messages=chat,
            tools=_plain(tools),
            documents=_plain(documents),
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(
            f"The chat template tried something the sandbox forbids: {_one_line(exc)}."
        ) from None
    except _Raised as exc:
        raise TemplateError(
            f"The chat template refused these messages: {_one_line(exc)}."
        ) from None
    except jinja2.exceptions.TemplateError as exc:
        raise TemplateError(f"The chat template failed: {_one_line(exc)}.") from None
    except RecursionError:
        raise TemplateError("The chat template recursed too deeply; it cannot render.") from None
    except Exception as exc:  # any Python error raised while the template runs
        raise TemplateError(
            f"The chat template failed ({type(exc).__name__}): {_one_line(exc)}."
        ) from None
