"""A minimal OpenAI-compatible server for any local model: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` and ``/health``.

Decoding is always greedy (``temperature`` is accepted and ignored), so a remote check sees what a
local one does. A chat request of one user message (after an optional system message) is encoded
token-exactly like local verification (:func:`omlkit.models.prompts.prompt_ids`); longer
conversations go through the chat template. Concurrent requests with the same decoding settings are
decoded together in one batched pass (:mod:`omlkit.verification.batching`, up to ``max_batch``
prompts), so throughput grows with client concurrency while each answer stays what it would be alone.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from omlkit.server_thread import ServerThread
from omlkit.text import WireText

MAX_TOP_LOGPROBS = 20


class _ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _validation_error(exc: RequestValidationError) -> dict[str, Any]:
    """OpenAI's error body for an invalid request: the first problem and the field it is in (never the
    input itself, which may not even be encodable)."""
    errors = exc.errors()
    # in a union, the branch whose own check failed says more than "not a list" from the others
    err = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    loc = [str(p) for p in err.get("loc", ()) if p != "body" and "[" not in str(p)]  # no union branch tags
    param = ".".join(loc) or None
    message = f"{param}: {err.get('msg', 'invalid value')}" if param else str(err.get("msg", "invalid body"))
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


class CompletionRequest(BaseModel):
    """Body of ``POST /v1/completions`` (fields the server does not use are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: WireText | list[WireText] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    temperature: float | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    stream: bool = False
    stop: WireText | list[WireText] | None = None
    n: int = 1


class TextPart(BaseModel):
    """A text content part of a chat message (the only kind a text model takes)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: WireText


class ChatMessage(BaseModel):
    """One message of a conversation: a string, or a list of text content parts."""

    model_config = ConfigDict(extra="allow")

    role: WireText
    content: WireText | list[TextPart]

    def text(self) -> str:
        """The content as one string (text parts joined in order)."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    stop: WireText | list[WireText] | None = None
    n: int = 1


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a conversation: token-exact like local verification for ``[system?, user]``,
    else the tokenizer's chat template. Raises ValueError when the tokenizer has no chat template."""
    from omlkit.models.prompts import has_chat_template, prompt_ids

    if not has_chat_template(tokenizer):
        raise ValueError("this model's tokenizer has no chat template; use /v1/completions")
    roles = [m["role"] for m in messages]
    if roles in (["user"], ["system", "user"]):
        system = messages[0]["content"] if roles[0] == "system" else None
        key_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        return prompt_ids(tokenizer, key_ids, system, chat=True)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _top_dict(tok: Any, step: list[tuple[int, float]]) -> dict[str, float]:
    """Completions-style top_logprobs: decoded token -> logprob, most likely first (first spelling wins)."""
    top: dict[str, float] = {}
    for t, lp in step:
        top.setdefault(tok.decode([t]), lp)
    return top


class OpenAIServer:
    """What the routes of :func:`create_app` do, one named step each: check the key, turn a request into
    prompt ids, decode them through the batcher, and shape the OpenAI response."""

    def __init__(self, backend: Any, name: str, api_key: str | None, max_tokens_limit: int, max_batch: int):
        from omlkit.verification.batching import DecodeBatcher

        self.backend, self.name, self.api_key = backend, name, api_key
        self.max_tokens_limit = max_tokens_limit
        self.tok = backend.tokenizer
        self.vocab = backend.model.get_input_embeddings().weight.shape[0]
        self.batcher = DecodeBatcher(backend, max_batch=max_batch)

    def check_key(self, request: Request) -> None:
        """401 unless the request carries the server's bearer token (when it has one)."""
        if self.api_key and request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise _ApiError(401, "missing or wrong API key", "authentication_error")

    def decode(
        self, prompts: list[list[int]], max_tokens: int | None, top_k: int, n: int, echo: bool = False
    ) -> list:
        """Greedy generations of ``prompts``; 400 for settings or prompts the server refuses. With
        ``echo``, ``max_tokens`` 0 asks for no new token (the prompt is only scored)."""
        max_tokens = 16 if max_tokens is None else max_tokens
        lowest = 0 if echo else 1
        if not lowest <= max_tokens <= self.max_tokens_limit:
            limit = self.max_tokens_limit
            raise _ApiError(400, f"max_tokens must be between {lowest} and {limit} (got {max_tokens})")
        if n != 1:
            raise _ApiError(400, "only n=1 is supported (decoding is greedy)")
        if any(not 0 <= t < self.vocab for p in prompts for t in p):
            raise _ApiError(400, f"prompt token ids must lie in [0, {self.vocab})")
        if max_tokens == 0:  # echo only: the prompt is scored, nothing generated
            from omlkit.verification.backends.transformers_backend import Generation

            longest = max(len(p) for p in prompts)
            if longest > self.backend.max_length or min(len(p) for p in prompts) == 0:
                raise _ApiError(400, f"prompts must hold 1 to {self.backend.max_length} tokens")
            return [Generation([], False) for _ in prompts]
        gens, errors = self.batcher.generate(prompts, max_tokens, top_k=top_k)
        bad = next((e for e in errors if e), None)
        if bad:
            raise _ApiError(400, bad)
        return gens

    def completion_prompts(self, prompt: Any) -> list[list[int]]:
        """Token ids of a completions ``prompt``: a string, a list of strings, ids, or lists of ids."""
        tok = self.tok
        if isinstance(prompt, str):
            return [list(tok(prompt, add_special_tokens=True)["input_ids"])]
        if prompt and all(isinstance(x, int) for x in prompt):
            return [list(prompt)]
        if prompt:
            return [list(tok(x, add_special_tokens=True)["input_ids"]) if isinstance(x, str) else list(x)
                    for x in prompt]
        raise _ApiError(400, "prompt is empty")

    def chat_prompts(self, messages: list[ChatMessage]) -> list[list[int]]:
        """Token ids of a conversation (400 for a tokenizer without a chat template)."""
        try:
            return [chat_prompt_ids(self.tok, [{"role": m.role, "content": m.text()} for m in messages])]
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None

    def completion_choice(
        self, index: int, gen: Any, stop: Any, top_k: int | None, echoed: tuple[list[int], Any] | None = None
    ) -> dict[str, Any]:
        """One ``text_completion`` choice, with completions-style logprobs when ``top_k`` is not None;
        ``echoed`` (prompt ids, their :meth:`prompt_logprobs` entry) puts the prompt before the answer."""
        tok = self.tok
        text, stopped = _cut_at_stop(tok.decode(gen.ids, skip_special_tokens=True), stop)
        n = len(gen.ids)
        ids, lps, tops = list(gen.ids), list(gen.logprobs[:n]), list(gen.top[:n])
        if echoed is not None and gen.stop_id is not None and len(gen.logprobs) > n:  # the API echoes the EOS
            ids, lps, tops = [*ids, gen.stop_id], [*lps, gen.logprobs[n]], [*tops, gen.top[n]]
        if echoed is not None:
            prompt_ids, scored = echoed
            text = tok.decode(prompt_ids, skip_special_tokens=True) + text
            ids = prompt_ids + ids
            if scored is not None:
                lps, tops = [*scored[0], *lps], [*scored[1], *tops]
        choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": _finish(gen, stopped),
                                  "logprobs": None}
        if top_k is not None:
            tokens = [tok.decode([t]) for t in ids]
            choice["logprobs"] = {
                "tokens": tokens,
                "token_logprobs": lps,
                "top_logprobs": [None if t is None else _top_dict(tok, t[: max(top_k, 1)]) for t in tops],
                "text_offset": [0, *itertools.accumulate(len(t) for t in tokens[:-1])] if tokens else [],
            }
        return choice

    def chat_choice(self, gen: Any, stop: Any, top_k: int, top_logprobs: int) -> dict[str, Any]:
        """The ``chat.completion`` choice, with chat-style logprobs when ``top_k``."""
        tok = self.tok
        text, stopped = _cut_at_stop(tok.decode(gen.ids, skip_special_tokens=True), stop)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": _finish(gen, stopped), "logprobs": None}
        if top_k:
            choice["logprobs"] = {"content": [
                {"token": tok.decode([t]), "logprob": lp,
                 "top_logprobs": [{"token": tok.decode([i]), "logprob": v} for i, v in step][:top_logprobs]}
                for t, lp, step in zip(gen.ids, gen.logprobs, gen.top, strict=False)
            ]}
        return choice

    def head(self, kind: str, chunk: bool = False) -> dict[str, Any]:
        """What every response (or streamed ``chunk``) of ``kind`` starts with: id, object, time, model."""
        chat = kind == "chat.completion"
        obj = ("chat.completion.chunk" if chat else kind) if chunk else kind
        return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "object": obj,
                "created": int(time.time()), "model": self.name}

    def stream(
        self, kind: str, choices: list[dict[str, Any]], gens: list, leads: list[str] | None = None
    ) -> StreamingResponse:
        """The finished answer streamed as the API does: a chunk per token, then one with the finish
        reason (``kind``: ``text_completion`` or ``chat.completion``); ``leads`` are echoed prompts,
        sent as the first chunk of each choice."""
        chat = kind == "chat.completion"
        head = self.head(kind, chunk=True)
        events = []
        for choice, gen, lead in zip(choices, gens, leads or [""] * len(gens), strict=True):
            i = choice["index"]
            text = choice["message"]["content"] if chat else choice["text"]
            if chat:
                events.append({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                    "finish_reason": None}]})
            for piece in ([lead] if lead else []) + _pieces(self.tok, list(gen.ids), text[len(lead):]):
                body = {"delta": {"content": piece}} if chat else {"text": piece, "logprobs": None}
                chunk = {"index": i, **body, "finish_reason": None}
                events.append({**head, "choices": [chunk]})
            end = {"delta": {}} if chat else {"text": "", "logprobs": None}
            last = {"index": i, **end, "finish_reason": choice["finish_reason"]}
            events.append({**head, "choices": [last]})
        return _sse(events)

    def response(self, kind: str, prompts: list[list[int]], gens: list, choices: list) -> dict[str, Any]:
        """The response body around ``choices``: id, object ``kind``, model and token usage."""
        p, c = sum(len(x) for x in prompts), sum(len(g.ids) for g in gens)
        return {**self.head(kind), "choices": choices,
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}


def _pieces(tok: Any, ids: list[int], text: str) -> list[str]:
    """``text`` (the decoded ``ids``, possibly cut at a stop sequence) in one piece per token, for
    streaming; a token that ends inside a multi-byte character waits for the next one."""
    pieces, sent = [], 0
    for i in range(1, len(ids) + 1):
        so_far = tok.decode(ids[:i], skip_special_tokens=True)
        if so_far.endswith("\ufffd") or sent >= len(text):
            continue
        piece = so_far[sent : len(text)]
        if piece:
            pieces.append(piece)
            sent += len(piece)
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces


def _sse(events: list[dict[str, Any]]) -> StreamingResponse:
    """Server-sent events as the OpenAI API streams them: one ``data:`` line per chunk, then [DONE]."""
    import json

    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(lines), media_type="text/event-stream")


def _finish(gen: Any, stopped: bool) -> str:
    return "stop" if gen.finished or stopped else "length"


def _add_error_handlers(app: FastAPI) -> None:
    """OpenAI-style error bodies: ours as raised, invalid bodies as 400 ``invalid_request_error``."""

    @app.exception_handler(_ApiError)
    async def _api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status,
            content={"error": {"message": exc.message, "type": exc.kind, "code": exc.status}},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=400, content=_validation_error(exc))


def create_app(
    model_path: Any = None,
    *,
    backend: Any = None,
    served_name: str | None = None,
    api_key: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_tokens_limit: int = 512,
    max_batch: int = 32,
) -> FastAPI:
    """The FastAPI app serving ``model_path`` (id, folder or embedded name; default omlkit-tiny), or an
    already built ``backend`` (a TransformersBackend, to share a loaded model). With ``api_key`` every
    request must carry ``Authorization: Bearer <api_key>`` (401 otherwise). Up to ``max_batch`` prompts of
    concurrent requests are decoded in one batch (``app.state.batcher.stats`` counts them)."""
    from omlkit.models.loading import DEFAULT_MODEL
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    if backend is None:
        model_path = model_path if model_path is not None else DEFAULT_MODEL
        backend = TransformersBackend(model_path, device=device, dtype=dtype, batch_size=max_batch)
    name = served_name or (str(model_path) if model_path is not None else backend.name)
    server = OpenAIServer(backend, name, api_key, max_tokens_limit, max_batch)
    app = FastAPI(title="omlkit serve", description=f"greedy OpenAI-compatible server for {name}")
    app.state.backend, app.state.batcher = backend, server.batcher
    _add_error_handlers(app)
    keyed = [Depends(server.check_key)]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=keyed)
    def models() -> dict[str, Any]:
        entry = {"id": name, "object": "model", "created": 0, "owned_by": "omlkit"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/completions", dependencies=keyed)
    def completions(req: CompletionRequest) -> Any:
        prompts = server.completion_prompts(req.prompt)
        top_k = 0 if req.logprobs is None else max(req.logprobs, 1)
        gens = server.decode(prompts, req.max_tokens, top_k, req.n, echo=req.echo)
        echoed: list = [None] * len(prompts)
        if req.echo:
            scored = backend.prompt_logprobs(prompts, req.logprobs) if req.logprobs is not None else None
            echoed = [(p, None if scored is None else scored[i]) for i, p in enumerate(prompts)]
        choices = [
            server.completion_choice(i, g, req.stop, req.logprobs, echoed[i]) for i, g in enumerate(gens)
        ]
        if req.stream:
            leads = [server.tok.decode(p, skip_special_tokens=True) for p in prompts] if req.echo else None
            return server.stream("text_completion", choices, gens, leads)
        return server.response("text_completion", prompts, gens, choices)

    @app.post("/v1/chat/completions", dependencies=keyed)
    def chat_completions(req: ChatRequest) -> Any:
        prompts = server.chat_prompts(req.messages)
        top_k = (req.top_logprobs or 1) if req.logprobs else 0
        gens = server.decode(prompts, req.max_completion_tokens or req.max_tokens, top_k, req.n)
        choice = server.chat_choice(gens[0], req.stop, top_k, req.top_logprobs or 0)
        if req.stream:
            return server.stream("chat.completion", [choice], gens)
        return server.response("chat.completion", prompts, gens, [choice])

    return app


@contextmanager
def serve_in_thread(app: Any, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread on a free loopback port; yields its API root
    (``http://127.0.0.1:PORT/v1``) and shuts the server down when the block exits."""
    with ServerThread(app, timeout=timeout) as server:
        yield f"{server.url}/v1"


def serve(
    model_path: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8000, **kw: Any
) -> None:
    """Run :func:`create_app` under uvicorn until interrupted (``kw`` go to create_app)."""
    import uvicorn

    uvicorn.run(create_app(model_path, **kw), host=host, port=port, log_level="info")
