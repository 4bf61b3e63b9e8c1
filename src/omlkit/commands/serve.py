"""``oml serve``: a minimal OpenAI-compatible server (greedy decoding) for any local model."""

from __future__ import annotations

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.verification.config import ServeConfig


def run_serve(cfg: ServeConfig) -> None:
    """Load the model and serve it under uvicorn until interrupted."""
    from rich.console import Console

    import omlkit.evaluation.attacks  # noqa: F401  (registers the wrapper loaders: --model may be one)
    from omlkit.verification.serve import serve

    Console(stderr=True).print(f"serving {cfg.model or 'omlkit-tiny'} on http://{cfg.host}:{cfg.port}/v1")
    serve(
        cfg.model,
        host=cfg.host,
        port=cfg.port,
        served_name=cfg.served_name,
        api_key=cfg.api_key,
        device=cfg.device,
        dtype=cfg.dtype,
        max_tokens_limit=cfg.max_tokens_limit,
        max_batch=cfg.max_batch,
    )


config_command(app, "serve", ServeConfig, run_serve)
