"""Hosts register the public endpoint the platform's verifier queries (and the model name it serves).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``hosts.endpoint`` and ``hosts.served_model`` (NULL for hosts registered before)."""
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("endpoint", sa.String(512), nullable=True))
        batch.add_column(sa.Column("served_model", sa.String(256), nullable=True))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("served_model")
        batch.drop_column("endpoint")
