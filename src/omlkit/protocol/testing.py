"""Helpers for protocol tests and benchmarks: a throw-away reset of a PostgreSQL test database (servers
in a thread on a free port: :mod:`omlkit.server_thread`).
"""

from __future__ import annotations


def reset_postgres(url: str) -> None:
    """Drop and recreate the ``public`` schema of the database at ``url`` (tests only: all data is lost)."""
    from sqlalchemy import create_engine, text

    from omlkit.protocol.ledger import database_url

    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
