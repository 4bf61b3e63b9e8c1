"""HTTP client of the platform (httpx). A refusal comes back as the same ProtocolError class the platform
raised; an unreachable platform or a non-JSON answer is an EndpointError.
"""

from __future__ import annotations

from typing import Any

import httpx

from omlkit.errors import EndpointError
from omlkit.protocol.messages import (
    Permission,
    PermissionRequest,
    ProofSubmission,
    RegisterHost,
    RegisterModel,
)
from omlkit.protocol.refusals import refusal_for


def _answer(response: httpx.Response, what: str) -> Any:
    try:
        data = response.json()
    except ValueError:
        raise EndpointError(f"{what}: platform answered HTTP {response.status_code} without JSON") from None
    if response.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        reason = data.get("reason", "") if isinstance(data, dict) else ""
        raise refusal_for(reason, f"{what} refused by the platform: {message or response.status_code}")
    return data


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"platform URL {url!r}: expected http:// or https://")
    return url.rstrip("/")


class PlatformClient:
    """Synchronous client for owners, admins and provers; ``admin_token`` only for registration calls."""

    def __init__(self, url: str, admin_token: str | None = None, timeout: float = 60.0) -> None:
        self.url = _base(url)
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EndpointError(f"{what}: cannot reach platform {self.url} ({type(exc).__name__})") from None
        return _answer(response, what)

    def info(self) -> dict:
        """The platform's public info (address, time window, alpha)."""
        return self._call("GET", "/v1/platform", "platform info")

    def address(self) -> str:
        """The platform's signing address."""
        return self.info()["address"]

    def register_model(self, request: RegisterModel) -> dict:
        """Register a model's commitments (admin)."""
        return self._call("POST", "/v1/models", "register model", json=request.model_dump(mode="json"))

    def register_host(self, request: RegisterHost) -> dict:
        """Register a host address (admin)."""
        return self._call("POST", "/v1/hosts", "register host", json=request.model_dump(mode="json"))

    def usage(self, host: str | None = None, model_id: str | None = None) -> list[dict]:
        """Permission counts per host and model."""
        params = {k: v for k, v in (("host", host), ("model_id", model_id)) if v}
        return self._call("GET", "/v1/usage", "usage", params=params)["usage"]

    def spent(self, model_id: str) -> set[int]:
        """Ids of the model's fingerprints already spent."""
        return set(self._call("GET", f"/v1/models/{model_id}/spent", "spent keys")["spent"])

    def trace_block(self, model_id: str, n: int) -> list[int]:
        """Reserve the next ``n`` pool keys of a distributed model (or get the block already reserved):
        the pool ids the next proof must reveal."""
        answer = self._call("POST", f"/v1/models/{model_id}/trace-block", "trace block", json={"n": n})
        return list(answer["ids"])

    def submit_proofs(self, submission: ProofSubmission) -> dict:
        """Submit proofs; returns the platform-signed verification report."""
        return self._call("POST", "/v1/proofs", "proof submission", json=submission.model_dump(mode="json"))

    def violations(self, host: str | None = None) -> list[dict]:
        """Signed violation records, optionally for one host."""
        return self._call("GET", "/v1/violations", "violations", params={"host": host} if host else {})[
            "violations"
        ]

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def request_permission_async(
    http: httpx.AsyncClient, platform_url: str, request: PermissionRequest
) -> Permission:
    """Obtain σ with an existing AsyncClient (the host proxy's path); refusals raise as in the sync client."""
    try:
        response = await http.post(
            f"{_base(platform_url)}/v1/permissions", json=request.model_dump(mode="json")
        )
    except httpx.HTTPError as exc:
        raise EndpointError(f"permission request: cannot reach platform ({type(exc).__name__})") from None
    return Permission.model_validate(_answer(response, "permission request"))
