"""Initial ledger schema: models, commitments, hosts, permissions, reports, violations.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table of the first ledger version."""
    op.create_table(
        "models",
        sa.Column("model_id", sa.String(128), primary_key=True),
        sa.Column("match", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "hosts",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "commitments",
        sa.Column("model_id", sa.String(128), sa.ForeignKey("models.model_id"), primary_key=True),
        sa.Column("fingerprint_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("commitment", sa.String(64), nullable=False),
        sa.Column("null_rate", sa.Float, nullable=False),
        sa.Column("spent_at", sa.Float, nullable=True),
        sa.Column("spent_report", sa.String(32), nullable=True),
    )
    op.create_table(
        "permissions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(42), sa.ForeignKey("hosts.address"), nullable=False),
        sa.Column("model_id", sa.String(128), sa.ForeignKey("models.model_id"), nullable=False),
        sa.Column("query_sha256", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("request_timestamp", sa.Float, nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("request_signature", sa.String(132), nullable=False),
        sa.Column("signature", sa.String(132), nullable=False),
        sa.UniqueConstraint("host", "nonce", name="uq_permissions_host_nonce"),
    )
    op.create_index("ix_permissions_lookup", "permissions", ["host", "model_id", "query_sha256"])
    op.create_table(
        "reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(42), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("violation", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_reports_host", "reports", ["host"])
    op.create_table(
        "violations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("report_id", sa.String(32), sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("host", sa.String(42), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_violations_host", "violations", ["host"])


def downgrade() -> None:
    """Drop every table (data is lost)."""
    for index, table in (
        ("ix_violations_host", "violations"),
        ("ix_reports_host", "reports"),
        ("ix_permissions_lookup", "permissions"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("violations", "reports", "permissions", "commitments", "hosts", "models"):
        op.drop_table(table)
