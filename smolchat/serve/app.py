"""The FastAPI application: ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or
server-sent events), ``GET /health``, over one :class:`~smolchat.serve.worker.EngineWorker`.

Every error is an OpenAI-style JSON body (``{"error": {"message", "type", "param", "code"}}``),
4xx for what the client can fix, never a traceback; the API key is checked in constant time and
never written anywhere. One line per request goes to ``log`` (method, path, status, tokens,
seconds).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smolchat.backend.types import (
    Backend,
    CancelToken,
    ChatMessage,
    Conversation,
    FinishReason,
    GenerationRequest,
    GenerationStats,
)
from smolchat.chat.settings import sampling_from_defaults
from smolchat.errors import SamplingError
from smolchat.serve.schemas import (
    MAX_STOP,
    MAX_STOP_CHARS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorResponse,
    FinishReasonOut,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)
from smolchat.serve.worker import Delta as WorkerDelta
from smolchat.serve.worker import Done, EngineWorker, Item, Job, QueueFullError, Refused

__all__ = ["MAX_BODY_BYTES", "ApiError", "ServeOptions", "create_app", "openai_finish_reason"]

MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body larger than this gets 413
_POLL_S = 0.1  # how often a non-streaming request checks that its client is still there


@dataclass
class ServeOptions:
    """``model_id``: the name clients see and send (``aliases`` are accepted too);
    ``api_key``: None to serve anyone; ``log``: where request lines go (None: nowhere)."""

    model_id: str
    aliases: tuple[str, ...] = ()
    api_key: str | None = None
    log: Callable[[str], None] | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_queue: int = 64
    created: int = field(default_factory=lambda: int(time.time()))


class ApiError(Exception):
    """An error answered as OpenAI does: status + ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            message=message,
            type=type or ("invalid_request_error" if status < 500 else "server_error"),
            param=param,
            code=code,
        )

    def response(self) -> JSONResponse:
        return error_response(self.status, self.body)


def error_response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=body).model_dump(), status_code=status)


def openai_finish_reason(reason: FinishReason) -> FinishReasonOut:
    """smolchat's finish reason in OpenAI terms: a full context window is ``length`` too."""
    return "length" if reason in ("length", "context") else "stop"


# --- requests -> the backend's types ----------------------------------------------------------
def conversation_of(body: ChatCompletionRequest, thinking_default: bool) -> Conversation:
    """System/developer messages first (joined), then user/assistant turns ending with a user
    message. Raises ApiError (400) for any other shape."""
    system: list[str] = []
    dialogue: list[ChatMessage] = []
    for i, m in enumerate(body.messages):
        if m.role in ("system", "developer"):
            if dialogue:
                raise ApiError(
                    400,
                    f"messages[{i}]: a {m.role} message must come before the conversation",
                    param=f"messages[{i}].role",
                )
            system.append(m.text())
        elif m.role == "user":
            dialogue.append(ChatMessage("user", m.text()))
        else:
            reasoning = m.reasoning_content if m.reasoning_content else None
            dialogue.append(ChatMessage("assistant", m.text(), reasoning))
    if not dialogue or dialogue[-1].role != "user":
        raise ApiError(
            400,
            "messages: the last message must be a user message (the one to answer)",
            param="messages",
        )
    kwargs = body.chat_template_kwargs
    thinking = thinking_default
    if kwargs is not None and kwargs.enable_thinking is not None:
        thinking = kwargs.enable_thinking
    return Conversation(
        tuple(dialogue), system_prompt="\n\n".join(system) if system else None, thinking=thinking
    )


def _unsupported(body: ChatCompletionRequest) -> None:
    """Fields that would change the answer and that the engine cannot honour: a 400 each."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise ApiError(
                400,
                f"{name} is not supported by smolchat's engine (it has the multiplicative "
                "repetition_penalty: send that instead, or 0)",
                param=name,
                code="unsupported_parameter",
            )
    if body.n not in (None, 1):
        raise ApiError(400, "n must be 1 (one engine, batch 1)", param="n")
    if body.logprobs:
        raise ApiError(400, "logprobs are not supported", param="logprobs")
    if body.tools:
        raise ApiError(400, "tools are not supported", param="tools")
    fmt = (body.response_format or {}).get("type", "text")
    if fmt != "text":
        raise ApiError(400, f"response_format {fmt!r} is not supported", param="response_format")
    stops = body.stop_sequences()
    if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(
            400, f"stop: at most {MAX_STOP} sequences of {MAX_STOP_CHARS} characters", param="stop"
        )


def generation_request(body: ChatCompletionRequest, backend: Backend) -> GenerationRequest:
    """The request as a GenerationRequest (sampling: the model's defaults, then the body's)."""
    _unsupported(body)
    sampling = sampling_from_defaults(dict(backend.generation_defaults))
    given = {
        name: getattr(body, name)
        for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
        if getattr(body, name) is not None
    }
    try:
        sampling = sampling.with_(**given)
    except SamplingError as exc:
        param = next((n for n in given if str(exc).startswith(n)), None)
        raise ApiError(400, str(exc), param=param) from None
    limit = backend.context_limit
    name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_new = body.max_completion_tokens or body.max_tokens
    if max_new is not None and max_new > limit:
        raise ApiError(
            400,
            f"{name} is {max_new}, but the context window holds {limit} tokens "
            "(prompt and reply together)",
            param=name,
        )
    thinking = backend.has_thinking_mode
    return GenerationRequest(
        conversation_of(body, thinking),
        sampling=sampling,
        max_new_tokens=max_new or limit,  # unset: whatever room the prompt leaves
        cancel=CancelToken(),
    )


def _usage(stats: GenerationStats) -> Usage:
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.generated_tokens,
        total_tokens=stats.prompt_tokens + stats.generated_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens),
    )


# --- the ASGI layer: body size, API key, one log line per request ---------------------------
class Gate:
    """Pure ASGI middleware: refuses bodies over the limit (413) and requests without the key
    (401), and logs each request once its response is complete."""

    def __init__(self, app: ASGIApp, options: ServeOptions) -> None:
        self.app = app
        self.options = options
        self._key = options.api_key.encode() if options.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record: dict[str, Any] = {"status": 0}
        scope.setdefault("state", {})["record"] = record

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                await ApiError(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                    code="invalid_api_key",
                ).response()(scope, receive, logged_send)
                return
            body = await self._read_body(receive)
            if body is None:
                limit = self.options.max_body_bytes
                await ApiError(
                    413, f"the request body is larger than {limit} bytes", code="body_too_large"
                ).response()(scope, receive, logged_send)
                return
            await self.app(scope, _replay(body, receive), logged_send)
        finally:
            self._log(scope, record, time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None:
            return True
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
        scheme, _, token = given.partition(b" ")
        ok = hmac.compare_digest(token.strip(), self._key)
        return ok and scheme.lower() == b"bearer"

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body (None if over the limit)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.options.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _log(self, scope: Scope, record: dict[str, Any], seconds: float) -> None:
        if self.options.log is None:
            return
        tokens = ""
        if "prompt_tokens" in record:
            tokens = f" {record['prompt_tokens']}+{record['completion_tokens']} tokens"
        if "note" in record:
            tokens += f" ({record['note']})"
        client = scope.get("client") or ("-", 0)
        self.options.log(
            f"{client[0]} {scope['method']} {scope['path']} {record['status']}{tokens} "
            f"{seconds:.2f}s"
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect, when it comes

    return replayed


# --- the application ---------------------------------------------------------------------------
def create_app(backend: Backend, options: ServeOptions) -> FastAPI:
    """The server for ``backend`` (its worker thread starts now; ``app.state.worker``)."""
    worker = EngineWorker(backend, max_queue=options.max_queue)
    app = FastAPI(title="smolchat serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    names = {options.model_id, *options.aliases}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(500, f"internal error ({type(exc).__name__})").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": options.model_id, "waiting": worker.waiting}

    @app.get("/v1/models")
    async def models() -> ModelList:
        card = ModelCard(
            id=options.model_id, created=options.created, max_model_len=backend.context_limit
        )
        return ModelList(data=[card])

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> ModelCard:
        if model_id not in names:
            raise _unknown_model(model_id, options.model_id)
        return ModelCard(
            id=options.model_id, created=options.created, max_model_len=backend.context_limit
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        if body.model not in names:
            raise _unknown_model(body.model, options.model_id)
        generation = generation_request(body, backend)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue()

        def sink(item: Item) -> None:  # on the worker thread; never blocks
            loop.call_soon_threadsafe(items.put_nowait, item)

        job = Job(generation, sink, body.stop_sequences())
        cancel = job.cancel  # a no-op once the turn has ended
        try:
            worker.submit(job)
        except QueueFullError as exc:
            raise ApiError(503, str(exc), code="overloaded") from None
        record: dict[str, Any] = request.scope["state"]["record"]
        try:
            first = await _next(items, request)
        except BaseException:
            cancel()
            raise
        if first is None:  # the client left while the request waited
            cancel()
            return Response(status_code=499)
        if isinstance(first, Refused):
            param = "messages" if first.status < 500 else None
            raise ApiError(first.status, first.message, code=first.code, param=param)
        reply = _Reply(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), options.model_id)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            events = _sse(reply, items, cancel, record, include_usage=usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            while True:
                item = await _next(items, request)
                if item is None:
                    cancel()
                    return Response(status_code=499)
                if isinstance(item, WorkerDelta):
                    reply.add(item)
                elif isinstance(item, Done):
                    break
        finally:
            cancel()  # a no-op once done; stops the engine if this handler is cancelled
        record.update(
            prompt_tokens=item.stats.prompt_tokens, completion_tokens=item.stats.generated_tokens
        )
        if item.finish_reason == "error":
            raise ApiError(500, item.error or "generation failed")
        message = AssistantMessage(
            content="".join(reply.answer),
            reasoning_content="".join(reply.reasoning) if reply.reasoning else None,
        )
        choice = Choice(message=message, finish_reason=openai_finish_reason(item.finish_reason))
        completion = ChatCompletion(
            id=reply.id,
            created=reply.created,
            model=reply.model,
            choices=[choice],
            usage=_usage(item.stats),
        )
        return JSONResponse(completion.model_dump(exclude_none=True))

    return Gate(app, options)  # type: ignore[return-value]


@dataclass
class _Reply:
    id: str
    created: int
    model: str
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)

    def add(self, delta: WorkerDelta) -> None:
        (self.reasoning if delta.kind == "reasoning" else self.answer).append(delta.text)

    def chunk(self, delta: Delta, finish: FinishReasonOut | None = None) -> str:
        body = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
        )
        return _event(body.model_dump(exclude_none=True))


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _next(items: asyncio.Queue[Item], request: Request) -> Item | None:
    """The worker's next item, or None once the client has disconnected."""
    while True:
        try:
            return await asyncio.wait_for(items.get(), _POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                return None


async def _sse(
    reply: _Reply,
    items: asyncio.Queue[Item],
    cancel: Callable[[], None],
    record: dict[str, Any],
    *,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The reply as server-sent events. Starlette cancels this generator when the client
    disconnects; ``finally`` then cancels the generation (it ends within one token)."""
    try:
        yield reply.chunk(Delta(role="assistant", content=""))
        while True:
            item = await items.get()
            if isinstance(item, WorkerDelta):
                if item.kind == "reasoning":
                    yield reply.chunk(Delta(reasoning_content=item.text))
                else:
                    yield reply.chunk(Delta(content=item.text))
            elif isinstance(item, Done):
                stats = item.stats
                record.update(
                    prompt_tokens=stats.prompt_tokens, completion_tokens=stats.generated_tokens
                )
                if item.finish_reason == "error":
                    error = ErrorBody(
                        message=item.error or "generation failed", type="server_error"
                    )
                    yield _event(ErrorResponse(error=error).model_dump())
                    return
                yield reply.chunk(Delta(), openai_finish_reason(item.finish_reason))
                if include_usage:
                    usage = ChatCompletionChunk(
                        id=reply.id,
                        created=reply.created,
                        model=reply.model,
                        choices=[],
                        usage=_usage(stats),
                    )
                    yield _event(usage.model_dump(exclude_none=True))
                yield "data: [DONE]\n\n"
                return
    finally:
        if "completion_tokens" not in record:
            record["note"] = "client disconnected"
        cancel()  # the client went away (a no-op once the turn has ended)


def _unknown_model(name: str, served: str) -> ApiError:
    return ApiError(
        404,
        f"the model {name!r} is not served here; this server serves {served!r} (GET /v1/models)",
        param="model",
        code="model_not_found",
    )


_UNION_TAGS = {"str", "int", "float", "bool", "list[TextPart]", "list[str]", "ChatTemplateKwargs"}


def _validation_error(exc: RequestValidationError) -> ApiError:
    """pydantic's first complaint as one line, with the field as ``param``."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "the request body is not valid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"the request body is not valid JSON ({detail})".replace(" ()", ""))
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return ApiError(
            400, "the request body must be a JSON object (Content-Type: application/json)"
        )
    loc = [p for p in loc if p not in _UNION_TAGS]
    param = ""
    for part in loc:
        param += f"[{part}]" if part.isdigit() else (f".{part}" if param else part)
    message = str(first.get("msg", "invalid value"))
    if not loc:
        return ApiError(400, f"the request body: {message}")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{param}: {message}{more}", param=param)
