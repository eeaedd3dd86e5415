"""The remote backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's ``llama-server``,
``transformers serve``, ollama, ``smolchat serve``) through the official ``openai`` client.

Each turn streams ``POST {url}/chat/completions`` with ``stream_options.include_usage``. The
server renders the prompt with its own chat template: the conversation goes as OpenAI messages
(a system message only when the user set a system prompt, so the server's template applies its
own default exactly as for any other client), thinking on/off as
``chat_template_kwargs: {"enable_thinking": ...}`` (vLLM, SGLang, llama.cpp with ``--jinja`` and
transformers serve pass it to the template). Reasoning comes from the delta's separate field
(``reasoning_content``: llama.cpp, SGLang, transformers; ``reasoning``: vLLM, ollama), or, when
the server sends ``<think>`` inline, from smolchat's own :class:`ReasoningParser`.

Token counts (context meter, overflow planning) use the model's tokenizer when one can be had
(``tokenizer=``, or the served id naming a local folder or a cached hub model); otherwise they
are estimated (about 4 characters a token) and each reply's usage figures come from the server:
once a reply has them, a conversation that goes on from it counts as that reply's
``prompt_tokens + completion_tokens`` plus the estimate of what came after.
:attr:`RemoteBackend.token_counting` says which.

Cancel closes the HTTP response at once (the server stops generating when the client goes).
The API key is given to the client only: it is never part of :attr:`description`, an error line
or anything else this module returns. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from smolchat.backend.types import (
    AnswerDelta,
    BackendEvent,
    ChatMessage,
    Conversation,
    EventStream,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    ReasoningDelta,
    StreamLock,
    plan_reply,
)
from smolchat.chat.reasoning import ReasoningParser
from smolchat.chat.thinking import history_for_template
from smolchat.errors import SmolchatError

if TYPE_CHECKING:
    import openai

    from smolchat.chat.tokenizer import Tokenizer

__all__ = ["DEFAULT_CONTEXT", "RemoteBackend", "RemoteError", "safe_url"]

DEFAULT_CONTEXT = 8192  # assumed when neither the server nor a tokenizer folder says
CHARS_PER_TOKEN = 4  # the estimate without a tokenizer
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # between two chunks: a busy CPU server can take minutes to prefill


class RemoteError(SmolchatError):
    """The server could not be used (one line: what went wrong and what to do)."""


@dataclass(frozen=True)
class MeasuredTurn:
    """The last reply the server reported usage for: what was sent, and the reply's text.

    ``prompt_tokens`` counts ``sent`` rendered with the generation prompt; ``completion_tokens``
    the reply (reasoning included), as the server counted them.
    """

    sent: Conversation
    answer: str
    prompt_tokens: int
    completion_tokens: int

    def known(self, conversation: Conversation) -> tuple[int, Sequence[ChatMessage], bool] | None:
        """(tokens the server counted, the messages after them, whether that count ends with
        the generation prompt) when ``conversation`` goes on from this turn (same system prompt
        and mode, ``sent`` first, then maybe the reply), else None."""
        sent = self.sent.messages
        if (
            conversation.system_prompt != self.sent.system_prompt
            or conversation.thinking != self.sent.thinking
            or conversation.messages[: len(sent)] != sent
        ):
            return None
        rest = conversation.messages[len(sent) :]
        if rest and rest[0].role == "assistant" and rest[0].content.strip() == self.answer.strip():
            return self.prompt_tokens + self.completion_tokens, rest[1:], False
        return self.prompt_tokens, rest, True


def safe_url(url: str) -> str:
    """``url`` without credentials: no ``user:password@``, no query string or fragment."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(
            f"{safe_url(url) or url[:60]!r} is not a server URL: give the API base, "
            "e.g. --server http://127.0.0.1:8000/v1"
        )
    return url.strip().rstrip("/")


class RemoteBackend:
    """A :class:`~smolchat.backend.types.Backend` over an OpenAI-compatible server.

    ``url``: the API base (``http://host:8000/v1``). ``model``: the served model's id; None
    takes the first one ``GET /models`` lists. ``api_key``: sent as ``Authorization: Bearer``
    (None: no key). ``tokenizer``: a folder or hub id with the model's ``tokenizer.json`` for
    exact token counts (None: the served id if it names one locally, else estimates).
    ``context_limit``: tokens the served context holds (None: what the server or the
    tokenizer folder's ``config.json`` says, else :data:`DEFAULT_CONTEXT`).

    The constructor asks the server for its models at once: :class:`RemoteError` (one line)
    if it is unreachable, not an OpenAI-compatible API, refuses the key, or lacks ``model``.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        tokenizer: str | None = None,
        context_limit: int | None = None,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        from urllib.parse import parse_qsl

        import httpx2
        import openai

        checked = _check_url(url)
        parts = urlsplit(checked)
        # a query (?token=...) goes with every request, not into the path the client extends
        self.url = safe_url(checked)  # credentials travel as headers/query, not in the URL
        query = dict(parse_qsl(parts.query)) or None
        headers = None
        if parts.username and not api_key:  # http://user:password@host/v1: basic auth
            import base64

            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        self._shown_url = safe_url(self.url)
        self._api_key = api_key
        self._secrets = [v for v in (api_key, parts.password, *(query or {}).values()) if v]
        self._client: openai.OpenAI = openai.OpenAI(
            base_url=self.url,
            default_query=query,
            default_headers=headers,
            api_key=api_key or "none",  # the client wants one; servers without auth ignore it
            max_retries=0,  # errors are the user's to see; /retry retries
            timeout=httpx2.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        )
        self._lock = StreamLock("a reply is already being generated; wait for it or cancel it")
        self._model = model or ""
        self._tokenizer_folder: Path | None = None
        served = self._models()
        if not served:
            raise RemoteError(f"the server at {self._shown_url} serves no model")
        ids = [str(m.get("id")) for m in served]
        if model is None:
            model = ids[0]
        elif model not in ids:
            raise RemoteError(
                f"the server at {self._shown_url} does not serve {model!r}; "
                f"it serves: {', '.join(ids[:10])}"
            )
        self._model = model
        entry = served[ids.index(model)]
        self.tokenizer_source: str | None = None
        self.tokenizer = self._load_tokenizer(tokenizer, model)
        self._context = context_limit or _context_from(entry) or self._context_from_folder()
        self._context_known = self._context is not None
        if self._context is None:
            self._context = DEFAULT_CONTEXT
        self.last_usage: dict[str, int] | None = None  # the last reply's usage figures
        self.measured: MeasuredTurn | None = None  # what they counted (estimates build on it)
        self._saw_chunk = False

    # --- what the UI asks -----------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model

    @property
    def context_limit(self) -> int:
        return int(self._context or DEFAULT_CONTEXT)

    @property
    def has_thinking_mode(self) -> bool:
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, str):
            return "enable_thinking" in template
        return "smollm3" in self._model.lower()  # no template to read: go by the name

    @property
    def supports_end_thinking(self) -> bool:
        return False  # a server cannot be told to close the reasoning mid-reply

    @property
    def description(self) -> str:
        return f"remote: {self._shown_url}"

    @property
    def generation_defaults(self) -> Mapping[str, Any]:
        return {}  # the server applies its own (generation_config.json on vLLM and others)

    @property
    def token_counting(self) -> str:
        """How token counts are had, for ``/stats``."""
        if self.tokenizer is not None:
            return f"the model's tokenizer ({self.tokenizer_source}); usage from the server"
        return (
            f"estimated (~{CHARS_PER_TOKEN} characters a token; --tokenizer gives exact "
            "counts) on top of the server's usage figures for its last reply"
        )

    def count_text(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def count_tokens(self, conversation: Conversation, *, add_generation_prompt: bool) -> int:
        if self.tokenizer is not None:
            msgs = history_for_template(
                self.messages(conversation),
                enable_thinking=conversation.thinking,
                template=self.tokenizer.chat_template,
            )
            ids = self.tokenizer.encode_chat(
                msgs,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=conversation.thinking,
            )
            return len(ids)
        # the server's figures for as much as it counted, an estimate (the text plus a few
        # tokens of framing a message) for the rest
        measured = self.measured
        known = measured.known(conversation) if measured is not None else None
        if known is None:
            messages = self.messages(conversation)
            return sum(self.count_text(m["content"]) + 4 for m in messages) + (
                3 if add_generation_prompt else 0
            )
        counted, rest, prompted = known
        total = counted + sum(self.count_text(m.content) + 4 for m in rest)
        if add_generation_prompt and (rest or not prompted):
            total += 3
        return total

    # --- the wire format ------------------------------------------------------------------
    @staticmethod
    def messages(conversation: Conversation) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages (a system message only if one is set)."""
        out: list[dict[str, Any]] = []
        if conversation.system_prompt is not None:
            out.append({"role": "system", "content": conversation.system_prompt})
        for m in conversation.messages:
            record: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.role == "assistant" and m.reasoning is not None:
                record["reasoning_content"] = m.reasoning  # templates that keep it read this
            out.append(record)
        return out

    def request_body(self, request: GenerationRequest, max_tokens: int) -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create`` (also what a test sends directly)."""
        s = request.sampling
        extra: dict[str, Any] = {
            "chat_template_kwargs": {"enable_thinking": request.conversation.thinking}
        }
        if s.top_k > 0:
            extra["top_k"] = s.top_k
        if s.min_p > 0:
            extra["min_p"] = s.min_p
        if s.repetition_penalty != 1.0:
            extra["repetition_penalty"] = s.repetition_penalty
        body: dict[str, Any] = {
            "model": self._model,
            "messages": self.messages(request.conversation),
            "max_tokens": max_tokens,
            "temperature": s.temperature,  # 0: greedy
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": extra,
        }
        if s.temperature > 0:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    # --- planning -------------------------------------------------------------------------
    def plan(self, request: GenerationRequest) -> int:
        """The reply budget. With a tokenizer, ContextOverflowError (with ``.drop``) if the turn
        cannot fit; without one the server is the judge (its refusal becomes an error line)."""
        max_new = request.max_new_tokens
        if self.tokenizer is None or not self._context_known:
            return max_new
        return plan_reply(
            request.conversation,
            max_new,
            self.context_limit,
            lambda c: self.count_tokens(c, add_generation_prompt=True),
        )

    # --- generation -----------------------------------------------------------------------
    def open(self, request: GenerationRequest) -> EventStream:
        budget = self.plan(request)
        return EventStream(self._events(request, budget), self._lock)

    def _events(self, request: GenerationRequest, budget: int) -> Iterator[BackendEvent]:
        cancel = request.cancel
        parser = ReasoningParser()
        stats = GenerationStats()
        finish: FinishReason | None = None
        error: str | None = None
        server_finish: str | None = None
        separate_reasoning = False  # the server sent reasoning in its own field
        reasoning_parts: list[str] = []
        chunks = 0
        usage_seen = False
        stream: Any = None
        started = time.perf_counter()
        first: float | None = None
        try:
            if cancel.cancelled:
                finish = "cancelled"
            else:
                stream = self._client.chat.completions.create(**self.request_body(request, budget))
                cancel.on_cancel(lambda: _close(stream))
                self._saw_chunk = False
                for chunk in stream:
                    self._saw_chunk = True
                    if cancel.cancelled:
                        break
                    if chunk.usage is not None:
                        self._take_usage(chunk.usage, stats)
                        usage_seen = True
                    for choice in chunk.choices or ():
                        delta = choice.delta
                        reasoning = _reasoning_of(delta)
                        content = getattr(delta, "content", None)
                        if reasoning or content:
                            chunks += 1
                            if first is None:
                                first = time.perf_counter()
                        if reasoning:
                            separate_reasoning = True
                            reasoning_parts.append(reasoning)
                            yield ReasoningDelta(reasoning)
                        if content:
                            if separate_reasoning:
                                yield AnswerDelta(content)
                                parser.answer += content
                            else:
                                yield from parser.feed(content)
                        if choice.finish_reason:
                            server_finish = str(choice.finish_reason)
            if finish is None:
                if cancel.cancelled:
                    finish = "cancelled"
                elif server_finish is None and not self._saw_chunk:
                    finish, error = (
                        "error",
                        (
                            f"{self._shown_url} sent no OpenAI stream (is it the API base, "
                            "usually ending in /v1?)"
                        ),
                    )
                elif server_finish is None:
                    finish, error = (
                        "error",
                        (
                            "the server's stream broke off mid-reply (a network or server "
                            "failure): "
                            "the partial reply is kept; /retry asks again"
                        ),
                    )
                else:
                    finish = self._finish_reason(server_finish, stats, budget, request)
        except GeneratorExit:  # the consumer stopped listening: close the HTTP stream now
            _close(stream)
            raise
        except Exception as exc:
            if cancel.cancelled:
                finish = "cancelled"  # closing the response mid-read ends the read with an error
            else:
                finish, error = "error", self.error_line(exc, started_reply=chunks > 0)
        finally:
            _close(stream)
        tail = [] if separate_reasoning else parser.finish()
        yield from tail
        if not stats.generated_tokens:
            stats.generated_tokens = chunks  # no usage figures: one chunk is about one token
        if not stats.prompt_tokens and self.tokenizer is not None:
            with contextlib.suppress(Exception):
                stats.prompt_tokens = self.count_tokens(
                    request.conversation, add_generation_prompt=True
                )
        stats.prefilled_tokens = stats.prompt_tokens - stats.cached_tokens
        end = time.perf_counter()
        stats.ttft_s = (first or end) - started
        stats.decode_s = end - (first or end)
        stats.finish_reason = finish
        if separate_reasoning:
            return_reasoning, answer, block = "".join(reasoning_parts), parser.answer, True
        else:
            return_reasoning, answer = parser.reasoning, parser.answer
            block = parser.opened_by_prompt or bool(parser.reasoning)
        if usage_seen and stats.prompt_tokens:
            self.measured = MeasuredTurn(
                request.conversation, answer, stats.prompt_tokens, stats.generated_tokens
            )
        yield Finished(finish, stats, error, block, reasoning=return_reasoning, answer=answer)

    def _take_usage(self, usage: Any, stats: GenerationStats) -> None:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        stats.prompt_tokens, stats.generated_tokens, stats.cached_tokens = (
            prompt,
            completion,
            cached,
        )
        self.last_usage = {"prompt_tokens": prompt, "completion_tokens": completion}

    def _finish_reason(
        self, server: str, stats: GenerationStats, budget: int, request: GenerationRequest
    ) -> FinishReason:
        if server != "length":
            return "stop"  # stop, and the rarer content_filter / tool_calls: the reply ended
        if budget < request.max_new_tokens:
            return "context"  # the budget was the room left in the context window
        if stats.prompt_tokens + stats.generated_tokens >= self.context_limit:
            return "context"
        return "length"

    # --- errors ---------------------------------------------------------------------------
    def _models(self) -> list[dict[str, Any]]:
        """``GET /models`` as dicts (RemoteError: one line, if the server can't be used)."""
        import openai

        try:
            page = self._client.models.list()
            return [m.model_dump() for m in page.data]
        except openai.NotFoundError:
            raise RemoteError(
                f"{self._shown_url} is not an OpenAI-compatible API (GET /models: 404): give "
                "the API base, usually ending in /v1 (e.g. http://127.0.0.1:8000/v1)"
            ) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError, AttributeError, TypeError):
            raise RemoteError(
                f"{self._shown_url} did not answer like an OpenAI-compatible API: give the API "
                "base, usually ending in /v1"
            ) from None
        except openai.APIError as exc:
            raise RemoteError(self.error_line(exc, started_reply=False)) from None

    def error_line(self, exc: BaseException, *, started_reply: bool) -> str:
        """One line for a failed request: what went wrong and what to do (never the key)."""
        import openai

        where = self._shown_url
        kept = " (the partial reply is kept; /retry asks again)" if started_reply else ""
        if isinstance(exc, openai.APITimeoutError):
            line = f"the server at {where} did not answer in time{kept}: is it overloaded? /retry"
        elif isinstance(exc, openai.APIConnectionError):
            cause = f"{exc.__cause__ or ''} {exc}".lower()
            if started_reply:
                line = f"the connection to {where} broke mid-reply{kept}"
            elif "refused" in cause:
                line = f"connection refused by {where}: is the server running on that port?"
            elif "name or service" in cause or "nodename" in cause or "resolve" in cause:
                line = f"cannot find the host of {where}: check the --server URL"
            else:
                line = f"cannot reach the server at {where}: check the URL and that it runs"
        elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            line = (
                f"the server at {where} refused the API key ({exc.status_code}): "
                "give the right one with --api-key or SMOLCHAT_API_KEY"
            )
        elif isinstance(exc, openai.NotFoundError):
            line = (
                f"the server at {where} answered 404 for {self._model!r}: check the model id "
                "(smolchat --server URL lists none? give the API base ending in /v1)"
            )
        elif isinstance(exc, openai.RateLimitError):
            line = f"the server at {where} is rate-limiting (429): wait a moment, then /retry"
        elif isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            detail = _server_message(exc)
            if code >= 500:
                line = f"the server at {where} failed ({code}{detail}): /retry, or check its log"
            elif "context" in detail.lower() or "too long" in detail.lower():
                line = (
                    f"the server refused the prompt as too long ({code}{detail}): drop old "
                    "turns with /drop N or /clear"
                )
            else:
                line = f"the server at {where} refused the request ({code}{detail})"
        elif isinstance(exc, openai.APIError):  # an error event inside the stream
            detail = " ".join(str(getattr(exc, "message", "") or "").split())[:200]
            if detail:
                line = f"the server at {where} failed mid-reply: {detail}{kept}"
            else:
                line = f"the server at {where} sent something that is not an OpenAI reply{kept}"
        elif isinstance(exc, SmolchatError):
            line = str(exc)
        else:
            detail = " ".join(str(exc).split())[:160]
            line = f"the request to {where} failed ({type(exc).__name__}: {detail}){kept}"
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line

    # --- tokenizer and context ------------------------------------------------------------
    def _load_tokenizer(self, given: str | None, model: str) -> Tokenizer | None:
        """The tokenizer named by ``given`` (RemoteError if it can't be had), else the served
        id's when it names a local folder or a cached hub model (else None)."""
        from smolchat.chat.tokenizer import Tokenizer

        for source, required in ((given, True), (None if given else model, False)):
            if source is None:
                continue
            folder = _tokenizer_folder(source, download=required)
            if folder is None:
                if required:
                    raise RemoteError(
                        f"no tokenizer.json for --tokenizer {source!r}: give a folder with "
                        "the model's tokenizer.json, or a hub id"
                    )
                continue
            try:
                tokenizer = Tokenizer.from_dir(folder)
            except SmolchatError as exc:
                if required:
                    raise RemoteError(f"--tokenizer {source!r}: {exc}") from None
                continue
            self.tokenizer_source = source
            self._tokenizer_folder = folder
            return tokenizer
        self._tokenizer_folder = None
        return None

    def _context_from_folder(self) -> int | None:
        folder = getattr(self, "_tokenizer_folder", None)
        if folder is None:
            return None
        with contextlib.suppress(OSError, ValueError, TypeError):
            config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
            value = config.get("max_position_embeddings")
            if isinstance(value, int) and value > 0:
                return value
        return None


def _tokenizer_folder(source: str, *, download: bool) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path if (path / "tokenizer.json").is_file() else None
    if source.count("/") != 1 or source.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        names = [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "config.json",
        ]
        folder = Path(
            snapshot_download(source, allow_patterns=names, local_files_only=not download)
        )
    except Exception:
        return None
    return folder if (folder / "tokenizer.json").is_file() else None


def _context_from(entry: Mapping[str, Any]) -> int | None:
    """The context length a ``/models`` entry gives (vLLM ``max_model_len``, llama.cpp
    ``meta.n_ctx_train``, others ``context_length``)."""
    for value in (
        entry.get("max_model_len"),
        entry.get("context_length"),
        (entry.get("meta") or {}).get("n_ctx") if isinstance(entry.get("meta"), dict) else None,
        (entry.get("meta") or {}).get("n_ctx_train")
        if isinstance(entry.get("meta"), dict)
        else None,
    ):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _reasoning_of(delta: Any) -> str | None:
    """The delta's separate reasoning text (``reasoning_content`` or ``reasoning``)."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if value is None:
            extra = getattr(delta, "model_extra", None) or {}
            value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + " ".join(message.split())[:160]


def _close(stream: Any) -> None:
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.close()
