"""Request bodies of the endpoints, as pydantic models: types are strict (a string is not a
number, 1 is not `true`), numbers must be finite and in range, and unknown fields are kept
(clients send many; the ones kiln does not act on are listed in docs/server.md).
Ranges that depend on the server (max_tokens against the slot context, id_slot against
--parallel) are checked when the request is prepared (prepare.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from .api_errors import APIError, bad_request

Number = StrictFloat | StrictInt
Probability = Annotated[Number, Field(ge=0.0, le=1.0)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: StrictBool = False


class SamplingFields(_Body):
    """Fields shared by every generating endpoint (OpenAI's names and llama-server's)."""

    model: StrictStr | None = None
    temperature: Annotated[Number, Field(ge=-1e6, le=1e6)] | None = None
    top_k: Annotated[StrictInt, Field(ge=-1, le=10_000_000)] | None = None
    top_p: Probability | None = None
    min_p: Probability | None = None
    repeat_penalty: Annotated[Number, Field(gt=0.0, le=1e6)] | None = None
    repeat_last_n: Annotated[StrictInt, Field(ge=-1, le=10_000_000)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    seed: Annotated[StrictInt, Field(ge=-1, le=2**64 - 1)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=64)] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n_probs: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    cache_prompt: StrictBool = True
    ignore_eos: StrictBool = False
    logit_bias: dict[StrictStr, Number | StrictBool] | list[tuple[StrictInt | StrictStr, Number | StrictBool]] | None = None
    id_slot: Annotated[StrictInt, Field(ge=-1)] = -1
    n: StrictInt = 1
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    n_predict: StrictInt | None = None
    user: StrictStr | None = None


class FunctionCall(_Body):
    name: StrictStr
    arguments: StrictStr | dict[str, Any] = ""


class ToolCallIn(_Body):
    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Body):
    type: StrictStr
    text: StrictStr | None = None


class Message(_Body):
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: StrictStr | None = None
    reasoning_content: StrictStr | None = None


class FunctionDef(_Body):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class ChatRequest(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_format: Literal["none", "auto", "deepseek", "deepseek-legacy"] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None


PromptItem = StrictStr | StrictInt


class CompletionRequest(SamplingFields):
    """`/v1/completions` (OpenAI) and `/completion` (llama-server): a text or token prompt."""

    prompt: StrictStr | Annotated[list[PromptItem], Field(min_length=1)]
    logprobs: StrictBool | Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool = False
    suffix: StrictStr | None = None


class TokenizeRequest(_Body):
    content: StrictStr = ""
    add_special: StrictBool = False
    with_pieces: StrictBool = False


class DetokenizeRequest(_Body):
    tokens: list[StrictInt] = []


class SlotFileRequest(_Body):
    filename: StrictStr


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"] if not isinstance(x, str) or not _is_type_tag(x))
        parts.append(f"{loc or 'body'}: {err['msg']}")
    more = len(e.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _is_type_tag(name: str) -> bool:
    """pydantic names the alternatives of a union in error locations (`str`, `list[int]`, ...)."""
    return any(c in name for c in "[]") or name in ("str", "int", "float", "bool", "dict", "list", "tuple")


def parse_body(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise APIError(f"invalid request: {_describe(e)}", "invalid_request_error") from None
