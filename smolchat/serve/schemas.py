"""The OpenAI chat-completions wire format, as pydantic models (requests validated, responses
built typed).

Only what smolchat serves is modelled; unknown request fields are accepted and ignored (clients
send many), except those that would change the answer and that the engine cannot honour
(``n > 1``, ``logprobs``, ``tools``, a non-text ``response_format``, non-zero presence or
frequency penalties): those are refused with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGES = 1024  # messages in one request
MAX_MESSAGE_CHARS = 1_000_000  # characters in one message (the context limit bounds use anyway)
MAX_STOP = 4  # stop sequences (OpenAI's limit)
MAX_STOP_CHARS = 256


class TextPart(BaseModel):
    """One part of a multi-part message content (only text is served)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class Message(BaseModel):
    """``{"role", "content"}``; an assistant message may carry its ``reasoning_content``."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    reasoning_content: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatTemplateKwargs(BaseModel):
    model_config = ConfigDict(extra="allow")
    enable_thinking: bool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Ranges are OpenAI's; ``top_k``, ``min_p`` and
    ``repetition_penalty`` are the vLLM / SGLang extras the engine also has."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=1024)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=10.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None

    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]


# --- responses ------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "smolchat"
    max_model_len: int  # the context window in tokens (vLLM's name for it)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens reused from the KV cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


FinishReasonOut = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReasonOut
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReasonOut | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
