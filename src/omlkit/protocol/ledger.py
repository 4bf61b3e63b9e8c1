"""The platform's ledger: SQLAlchemy 2 tables and sessions. SQLite (WAL, one file) or PostgreSQL by URL.

The schema is owned by the Alembic migrations in ``migrations/``; :class:`Ledger` applies them on
open, so a new file or an empty database is ready to use and an old one is upgraded in place.
SQLite write sessions start with ``BEGIN IMMEDIATE`` so a read-then-write transaction takes the write
lock up front instead of failing with "database is locked" when two writers race.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from omlkit.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""


class ModelRow(Base):
    """A registered model: its id and the match rule its verifier applies; for a model distributed as
    per-host copies, the rate at which pool keys went to each copy, the secret order, drawn by the
    platform at registration, in which pool keys are revealed (a JSON list of ids), where the next trace
    block starts in it, and the size of the block reserved (0: none)."""

    __tablename__ = "models"
    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    match: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    copy_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    trace_order: Mapped[str | None] = mapped_column(Text, nullable=True)
    trace_pos: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trace_pending: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CopyRow(Base):
    """One host's copy of a distributed model: the pool fingerprint ids it holds (a JSON list)."""

    __tablename__ = "copies"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str | None] = mapped_column(String(42), nullable=True)
    fingerprint_ids: Mapped[str] = mapped_column(Text)


class CommitmentRow(Base):
    """One fingerprint commitment of a model; ``spent_at`` is set once a proof used its key."""

    __tablename__ = "commitments"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"), primary_key=True)
    fingerprint_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    commitment: Mapped[str] = mapped_column(String(64))
    null_rate: Mapped[float] = mapped_column(Float)
    spent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_report: Mapped[str | None] = mapped_column(String(32), nullable=True)


class HostRow(Base):
    """A host that signed the licence agreement, named by its address."""

    __tablename__ = "hosts"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[float] = mapped_column(Float)
    endpoint: Mapped[str | None] = mapped_column(String(512), nullable=True)
    served_model: Mapped[str | None] = mapped_column(String(256), nullable=True)


class PermissionRow(Base):
    """One issued permission σ: the host's signed request and the platform's signature."""

    __tablename__ = "permissions"
    __table_args__ = (
        UniqueConstraint("host", "nonce", name="uq_permissions_host_nonce"),
        Index("ix_permissions_lookup", "host", "model_id", "query_sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(ForeignKey("hosts.address"))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"))
    query_sha256: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(64))
    request_timestamp: Mapped[float] = mapped_column(Float)
    issued_at: Mapped[float] = mapped_column(Float)
    request_signature: Mapped[str] = mapped_column(String(132))
    signature: Mapped[str] = mapped_column(String(132))


class ReportRow(Base):
    """A signed verification report (the JSON as sent), one per proof submission."""

    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(42), index=True)
    model_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    violation: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    body: Mapped[str] = mapped_column(Text)


class ViolationRow(Base):
    """A signed violation record (the JSON as sent)."""

    __tablename__ = "violations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"))
    host: Mapped[str] = mapped_column(String(42), index=True)
    model_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    body: Mapped[str] = mapped_column(Text)


def database_url(db: str) -> str:
    """Turn ``--db`` into a SQLAlchemy URL: a plain path means a SQLite file; ConfigError if unusable."""
    if "://" not in db:
        path = Path(db).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    try:
        url = make_url(db)
    except ArgumentError:
        raise ConfigError(f"--db: cannot parse database URL {db!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"--db: expected a SQLite path/URL or postgresql://..., got {url.get_backend_name()!r}"
        )
    if url.drivername == "postgresql":  # SQLAlchemy 2.1 defaults to psycopg 3; we ship psycopg2
        url = url.set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged permission survives a crash
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        immediate = conn.get_execution_options().get("oml_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Ledger:
    """Engine and sessions of one ledger database; migrations are applied when it is opened."""

    def __init__(self, db: str, migrate: bool = True) -> None:
        self.url = database_url(db)
        backend = make_url(self.url).get_backend_name()
        self.dialect = backend
        if backend == "sqlite":
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self._write_lock = threading.Lock() if backend == "sqlite" else nullcontext()
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(oml_write=True), expire_on_commit=False)
        if migrate:
            self.upgrade()

    @property
    def display_url(self) -> str:
        """The URL with any password hidden (safe to print)."""
        return make_url(self.url).render_as_string(hide_password=True)

    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision`` on this database."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back entirely on any exception.

        On SQLite, writers in this process take turns on a lock: SQLite allows one writer anyway, and
        its busy handler (sleeps of up to 100 ms) would otherwise throttle many concurrent writers.
        """
        with self._write_lock, self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
