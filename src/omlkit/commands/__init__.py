"""CLI command modules; importing this package registers every command on ``app``.

Each module holds one command (or one command group) and keeps heavy imports inside the command
body so ``oml --help`` stays instant.
"""

from omlkit.commands import (  # noqa: F401  (each import registers its commands)
    attack,
    base_model,
    demo,
    evaluate,
    generate,
    insert,
    listing,
    protocol,
    report,
    serve,
    sweep,
    tracing,
    verify,
)
from omlkit.commands._app import STATE, app

__all__ = ["STATE", "app"]
