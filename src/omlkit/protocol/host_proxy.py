"""The compliant host: an OpenAI-compatible reverse proxy that obtains σ for every query before serving it.

For ``POST /v1/completions`` and ``POST /v1/chat/completions`` the proxy takes the query text (each
prompt; for chat, the last user message), asks the platform for a permission signed by the host key,
checks that σ really is the platform's signature over this request, and only then forwards the body
unchanged to the upstream server (any OpenAI-compatible one: vLLM, TGI, ``oml serve``). Streaming
answers are passed through. No permission, no answer: a refusal becomes HTTP 503.

The proxy's own log (JSONL) records time, path, query hash, nonce, σ, upstream status and latency —
never a prompt, an answer or the key.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from omlkit.errors import EndpointError, ProtocolError
from omlkit.io import append_jsonl, canonical_json
from omlkit.protocol.client import PlatformClient, request_permission_async
from omlkit.protocol.config import ProxyConfig
from omlkit.protocol.identity import Identity
from omlkit.protocol.messages import Permission, PermissionRequest
from omlkit.protocol.platform_app import BodyLimit

ROUTES = ("/v1/completions", "/v1/chat/completions")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones in order
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return canonical_json(content)


def queries_of(path: str, body: Any) -> list[str]:
    """The query texts a request asks the model about: each prompt, or the chat's last user message.

    The prover hashes a key the same way, so σ(sha256(key)) is what the verifier looks up. Raises
    ProtocolError for a body that has no prompt or messages.
    """
    if not isinstance(body, dict):
        raise ProtocolError("request body: expected a JSON object")
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProtocolError("messages: expected a non-empty list")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return [_text(users[-1].get("content")) if users else canonical_json(messages)]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt:  # token ids (one or several prompts)
        return [canonical_json(prompt)]
    raise ProtocolError("prompt: expected a string, a list of strings, or token ids")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_proxy_app(config: ProxyConfig, identity: Identity, platform_address: str | None = None) -> FastAPI:
    """The proxy ASGI app; ``platform_address`` is fetched from the platform at startup when not given."""
    config.check()
    state: dict[str, Any] = {"platform_address": platform_address or config.platform_address}
    upstream = config.upstream.rstrip("/")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        if state["platform_address"] is None:
            with PlatformClient(config.platform, timeout=config.timeout_s) as client:
                state["platform_address"] = await asyncio.to_thread(client.address)
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits) as http:
            state["http"] = http
            yield

    app = FastAPI(
        title="omlkit host proxy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    async def permit(query: str) -> Permission:
        request = PermissionRequest.create(identity, config.model_id, query)
        permission = await request_permission_async(state["http"], config.platform, request)
        if (permission.query_sha256, permission.nonce, permission.host) != (
            request.query_sha256,
            request.nonce,
            identity.address,
        ):
            raise ProtocolError("permission: the platform answered for another request")
        permission.check_signed_by(state["platform_address"], "permission")
        return permission

    async def log(record: dict) -> None:
        await asyncio.to_thread(append_jsonl, config.log, record)

    async def forward(request: Request) -> Response:
        started = time.time()
        path = request.url.path
        raw = await request.body()
        try:
            body = json.loads(raw)
            queries = queries_of(path, body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body: not valid JSON", "invalid_request_error")
        except RecursionError:
            return _error(400, "request body: JSON nested too deeply", "invalid_request_error")
        except ProtocolError as exc:
            return _error(400, str(exc), "invalid_request_error")
        try:
            permissions = await asyncio.gather(*(permit(q) for q in queries))
        except (ProtocolError, EndpointError) as exc:
            await log(
                {
                    "time": started,
                    "path": path,
                    "model_id": config.model_id,
                    "permitted": False,
                    "error": type(exc).__name__,
                }
            )
            return _error(503, f"no permission from the platform: {exc}", "permission_denied")
        headers = {"content-type": "application/json"}
        http: httpx.AsyncClient = state["http"]
        try:
            upstream_request = http.build_request("POST", upstream + path, content=raw, headers=headers)
            answer = await http.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            return _error(502, f"upstream unreachable ({type(exc).__name__})", "upstream_error")
        record = {
            "time": started,
            "path": path,
            "model_id": config.model_id,
            "permitted": True,
            "permissions": [
                {
                    "query_sha256": p.query_sha256,
                    "nonce": p.nonce,
                    "timestamp": p.timestamp,
                    "signature": p.signature,
                }
                for p in permissions
            ],
            "upstream_status": answer.status_code,
        }
        if isinstance(body, dict) and body.get("stream"):
            await log({**record, "stream": True})
            return StreamingResponse(
                answer.aiter_raw(),
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type"),
                background=BackgroundTask(answer.aclose),
            )
        content = await answer.aread()
        await answer.aclose()
        await log({**record, "latency_ms": round(1000 * (time.time() - started), 1)})
        return Response(
            content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type", "application/json"),
        )

    for route in ROUTES:
        app.add_api_route(route, forward, methods=["POST"])

    @app.get("/v1/models")
    async def models() -> Response:
        try:
            answer = await state["http"].get(upstream + "/v1/models")
        except httpx.HTTPError as exc:
            return _error(502, f"upstream unreachable ({type(exc).__name__})", "upstream_error")
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type", "application/json"),
        )

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "host": identity.address, "model_id": config.model_id}

    return app


def serve(config: ProxyConfig) -> None:
    """Run the proxy described by ``config`` until interrupted."""
    import uvicorn

    identity = Identity.load(config.key)
    app = create_proxy_app(config, identity)
    print(
        f"host {identity.address} proxying {config.upstream} for model {config.model_id!r} "
        f"on http://{config.host}:{config.port} (log {config.log})",
        flush=True,
    )
    uvicorn.run(app, host=config.host, port=config.port, access_log=False, log_level="warning")
