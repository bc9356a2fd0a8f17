"""Runs survive their workers: how many workers a run has lost (`attempts`), the step its current attempt resumed
from, and every change of a run's status with its reason (`run_events`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resumed_from", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("worker", sa.String(200)),
        sa.Column("step", sa.Integer()),
    )


def downgrade() -> None:
    op.drop_table("run_events")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resumed_from")
        batch.drop_column("attempts")
