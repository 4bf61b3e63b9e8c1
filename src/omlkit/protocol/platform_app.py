"""The platform's HTTP face (FastAPI). All logic lives in :class:`omlkit.protocol.service.Platform`.

Endpoints (JSON):

- ``GET  /v1/platform``                 address, time window, alpha
- ``POST /v1/models``      (admin)      register a model's commitments
- ``POST /v1/hosts``       (admin)      register a host address
- ``POST /v1/permissions``              host-signed request -> σ
- ``GET  /v1/usage``                    permission counts per host and model
- ``GET  /v1/models/{id}/spent``        fingerprint ids already used in proofs
- ``POST /v1/models/{id}/trace-block``  reserve the next pool keys a distributed model's proof reveals
- ``POST /v1/proofs``                   proof submission -> signed verification report
- ``GET  /v1/violations``               signed violation records

Refusals answer ``{"error": one line, "reason": class name}``; validation errors name the field but
never echo its value (a proof carries secrets). Bodies over the size limit are refused with 413 before
they are parsed. Nothing here logs a body.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from omlkit.errors import ProtocolError
from omlkit.protocol.messages import (
    PermissionRequest,
    ProofSubmission,
    RegisterHost,
    RegisterModel,
    TraceBlockRequest,
)
from omlkit.protocol.refusals import Refused, Unauthorized
from omlkit.protocol.service import Platform

PERMISSION_BODY_BYTES = 4096


class BodyLimit:
    """ASGI middleware refusing (413) bodies larger than ``limit`` bytes, declared or streamed.

    ``per_path`` sets tighter limits for exact paths (a permission request is a few hundred bytes).
    """

    def __init__(self, app, limit: int, per_path: dict[str, int] | None = None) -> None:  # noqa: ANN001
        self.app = app
        self.limit = limit
        self.per_path = per_path or {}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.per_path.get(scope.get("path", ""), self.limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                return await too_large(limit)(scope, receive, send)
        seen = 0

        async def limited_receive():  # noqa: ANN202
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit (FastAPI re-raises HTTPExceptions)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413)
        self.limit = limit


def too_large(limit: int) -> JSONResponse:
    """The 413 answer for a body over ``limit`` bytes."""
    return JSONResponse(
        {"error": f"request body exceeds {limit} bytes", "reason": "TooLarge"}, status_code=413
    )


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the first invalid field and what was expected (the value itself is not echoed)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{loc}: {err.get('msg', 'invalid')}"


def create_app(platform: Platform, admin_token: str | None, max_body_bytes: int = 8 * 1024 * 1024) -> FastAPI:
    """The platform ASGI app. Registration is refused (401) without ``admin_token`` as a bearer token."""
    app = FastAPI(title="omlkit platform", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.platform = platform
    app.add_middleware(BodyLimit, limit=max_body_bytes, per_path={"/v1/permissions": PERMISSION_BODY_BYTES})

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(_request: Request, exc: _BodyTooLarge) -> JSONResponse:
        return too_large(exc.limit)

    @app.exception_handler(ProtocolError)
    async def _refused(_request: Request, exc: ProtocolError) -> JSONResponse:
        status = exc.status if isinstance(exc, Refused) else 400
        return JSONResponse({"error": str(exc), "reason": type(exc).__name__}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc), "reason": "Invalid"}, status_code=422)

    def admin(authorization: str | None = Header(None)) -> None:
        expected = f"Bearer {admin_token}" if admin_token else None
        if (
            not expected
            or not authorization
            or not hmac.compare_digest(authorization.encode(), expected.encode())
        ):
            raise Unauthorized("admin token missing or wrong (Authorization: Bearer <token>)")

    @app.get("/v1/platform")
    def info() -> dict:
        return {
            "address": platform.address,
            "time_window_s": platform.time_window_s,
            "alpha": platform.alpha,
            "protocol": "oml/1.0",
        }

    @app.post("/v1/models", status_code=201, dependencies=[Depends(admin)])
    def register_model(request: RegisterModel) -> dict:
        return platform.register_model(request)

    @app.post("/v1/hosts", status_code=201, dependencies=[Depends(admin)])
    def register_host(request: RegisterHost) -> dict:
        return platform.register_host(request)

    @app.post("/v1/permissions")
    def permission(request: PermissionRequest) -> dict:
        return platform.issue_permission(request).model_dump(mode="json")

    @app.get("/v1/usage")
    def usage(host: str | None = None, model_id: str | None = None) -> dict:
        return {"usage": platform.usage(host=host, model_id=model_id)}

    @app.get("/v1/models/{model_id:path}/spent")
    def spent(model_id: str) -> dict:
        return {"model_id": model_id, "spent": platform.spent(model_id)}

    @app.post("/v1/models/{model_id:path}/trace-block")
    def trace_block(model_id: str, request: TraceBlockRequest) -> dict:
        return {"model_id": model_id, "ids": platform.trace_block(model_id, request.n)}

    @app.post("/v1/proofs")
    def proofs(submission: ProofSubmission) -> dict:
        return platform.submit_proofs(submission)

    @app.get("/v1/violations")
    def violations(host: str | None = None) -> dict:
        return {"violations": platform.violations(host=host)}

    return app


def serve(config, *, ready_message: bool = True) -> None:  # noqa: ANN001
    """Run the platform described by ``PlatformConfig`` until interrupted (uvicorn, one process)."""
    import uvicorn

    from omlkit.paths import omlkit_home
    from omlkit.protocol.config import resolve_admin_token
    from omlkit.protocol.identity import Identity
    from omlkit.protocol.ledger import Ledger

    token = resolve_admin_token(config.admin_token)
    identity, created = Identity.load_or_create(config.key or omlkit_home() / "platform.key")
    ledger = Ledger(config.db)
    platform = Platform(ledger, identity, time_window_s=config.time_window_s, alpha=config.alpha)
    app = create_app(platform, token, config.max_body_bytes)
    if ready_message:
        print(
            f"platform {identity.address}{' (new key)' if created else ''} ledger {ledger.display_url} "
            f"on http://{config.host}:{config.port}",
            flush=True,
        )
    uvicorn.run(app, host=config.host, port=config.port, access_log=config.access_log,
                log_config=_log_config(access=config.access_log))


def _log_config(access: bool) -> dict:
    """uvicorn's logging config with its own messages at WARNING and, with ``access``, the request lines
    (method, path, status; never bodies) at INFO: ``log_level="warning"`` alone silenced them."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["uvicorn"]["level"] = cfg["loggers"]["uvicorn.error"]["level"] = "WARNING"
    cfg["loggers"]["uvicorn.access"]["level"] = "INFO" if access else "WARNING"
    return cfg
