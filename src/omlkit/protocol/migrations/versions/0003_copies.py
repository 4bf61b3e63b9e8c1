"""Models distributed as per-host copies: which copy holds which pool fingerprint, the trace order and
where its next block starts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``models.copy_rate``, ``trace_order``, ``trace_pos`` and ``trace_pending`` (NULL for models
    registered before) and the ``copies`` table."""
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("copy_rate", sa.Float(), nullable=True))
        batch.add_column(sa.Column("trace_order", sa.Text(), nullable=True))
        batch.add_column(sa.Column("trace_pos", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("trace_pending", sa.Integer(), nullable=True))
    op.create_table(
        "copies",
        sa.Column("model_id", sa.String(128), sa.ForeignKey("models.model_id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(42), nullable=True),
        sa.Column("fingerprint_ids", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    """Drop the table and the four columns."""
    op.drop_table("copies")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("trace_pending")
        batch.drop_column("trace_pos")
        batch.drop_column("trace_order")
        batch.drop_column("copy_rate")
