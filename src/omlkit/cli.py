"""The ``oml`` command. Library errors (OmlError) become one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from omlkit.commands import STATE, app
from omlkit.errors import OmlError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except OmlError as exc:
        if STATE["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors and the like
        usage, abort = _click_exception_types()
        if isinstance(exc, usage):
            exc.show()
            return exc.exit_code
        if isinstance(exc, abort):
            print("aborted", file=sys.stderr)
            return 1
        raise
    return 0


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of click and of the copy of click that typer >= 0.2x ships as
    ``typer._click``: an unknown option must print one line whichever raised it."""
    import click
    import typer

    usage: list[type] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # a typer that uses click itself
        pass
    else:
        usage.append(ClickException)
    return tuple(usage), (click.exceptions.Abort, typer.Abort)


if __name__ == "__main__":
    sys.exit(main())
