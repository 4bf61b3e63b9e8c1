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


class HostProxy:
    """What the proxy's routes do, one named step each: read the request's queries, obtain σ for each,
    send the body upstream, relay the answer, and log hashes and σ (never text)."""

    def __init__(self, config: ProxyConfig, identity: Identity, platform_address: str | None) -> None:
        self.config, self.identity = config, identity
        self.platform_address = platform_address or config.platform_address
        self.upstream = config.upstream.rstrip("/")
        self.http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def running(self, _app: FastAPI):  # noqa: ANN201
        """The app's lifespan: learn the platform's address if not pinned; hold the HTTP client."""
        if self.platform_address is None:
            with PlatformClient(self.config.platform, timeout=self.config.timeout_s) as client:
                self.platform_address = await asyncio.to_thread(client.address)
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=self.config.timeout_s, limits=limits) as http:
            self.http = http
            yield

    async def permit(self, query: str) -> Permission:
        """σ for ``query``, checked to be the platform's signature over exactly this request."""
        request = PermissionRequest.create(self.identity, self.config.model_id, query)
        permission = await request_permission_async(self.http, self.config.platform, request)
        if (permission.query_sha256, permission.nonce, permission.host) != (
            request.query_sha256,
            request.nonce,
            self.identity.address,
        ):
            raise ProtocolError("permission: the platform answered for another request")
        permission.check_signed_by(self.platform_address, "permission")
        return permission

    async def log(self, record: dict) -> None:
        """Append one record to the proxy's JSONL log."""
        await asyncio.to_thread(append_jsonl, self.config.log, record)

    async def forward(self, request: Request) -> Response:
        """The route of both completion endpoints: no σ, no answer (503)."""
        started, path = time.time(), request.url.path
        raw = await request.body()
        body, queries, refusal = _read_queries(path, raw)
        if refusal is not None:
            return refusal
        try:
            permissions = await asyncio.gather(*(self.permit(q) for q in queries))
        except (ProtocolError, EndpointError) as exc:
            await self.log({"time": started, "path": path, "model_id": self.config.model_id,
                            "permitted": False, "error": type(exc).__name__})
            return _error(503, f"no permission from the platform: {exc}", "permission_denied")
        try:
            upstream_request = self.http.build_request(
                "POST", self.upstream + path, content=raw, headers={"content-type": "application/json"}
            )
            answer = await self.http.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            return _error(502, f"upstream unreachable ({type(exc).__name__})", "upstream_error")
        record = {"time": started, "path": path, "model_id": self.config.model_id, "permitted": True,
                  "permissions": [_logged(p) for p in permissions], "upstream_status": answer.status_code}
        return await self.relay(answer, bool(isinstance(body, dict) and body.get("stream")), record)

    async def relay(self, answer: httpx.Response, stream: bool, record: dict) -> Response:
        """The upstream answer as it came: streamed through for ``stream``, else read whole."""
        if stream:
            await self.log({**record, "stream": True})
            return StreamingResponse(
                answer.aiter_raw(),
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type"),
                background=BackgroundTask(answer.aclose),
            )
        content = await answer.aread()
        await answer.aclose()
        await self.log({**record, "latency_ms": round(1000 * (time.time() - record["time"]), 1)})
        return Response(content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type", "application/json"))

    async def models(self) -> Response:
        """The upstream's model list, passed through."""
        try:
            answer = await self.http.get(self.upstream + "/v1/models")
        except httpx.HTTPError as exc:
            return _error(502, f"upstream unreachable ({type(exc).__name__})", "upstream_error")
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type", "application/json"))


def _read_queries(path: str, raw: bytes) -> tuple[Any, list[str], JSONResponse | None]:
    """``(body, queries, None)``, or a 400 response for a body the proxy cannot account for."""
    try:
        body = json.loads(raw)
        return body, queries_of(path, body), None
    except (json.JSONDecodeError, UnicodeDecodeError):
        message = "request body: not valid JSON"
    except RecursionError:
        message = "request body: JSON nested too deeply"
    except ProtocolError as exc:
        message = str(exc)
    return None, [], _error(400, message, "invalid_request_error")


def _logged(permission: Permission) -> dict:
    return {"query_sha256": permission.query_sha256, "nonce": permission.nonce,
            "timestamp": permission.timestamp, "signature": permission.signature}


def create_proxy_app(config: ProxyConfig, identity: Identity, platform_address: str | None = None) -> FastAPI:
    """The proxy ASGI app; ``platform_address`` is fetched from the platform at startup when not given."""
    config.check()
    proxy = HostProxy(config, identity, platform_address)
    app = FastAPI(
        title="omlkit host proxy", lifespan=proxy.running, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    for route in ROUTES:
        app.add_api_route(route, proxy.forward, methods=["POST"])
    app.add_api_route("/v1/models", proxy.models, methods=["GET"])

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
