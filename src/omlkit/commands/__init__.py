"""CLI command modules; importing this package registers every command on ``app``.

Each module holds one command (or one command group) and keeps heavy imports inside the command
body so ``oml --help`` stays instant.
"""

from omlkit.commands import listing  # noqa: F401
from omlkit.commands._app import STATE, app

__all__ = ["STATE", "app"]
