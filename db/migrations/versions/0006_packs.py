"""Packed sweeps: a sweep's compatible runs train together as one vectorised model (`packs`); each member run
says which pack it belongs to and how many runs the pack has.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="SET NULL"), index=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pack_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pack_size", sa.Integer(), nullable=True))
        batch.create_index("ix_runs_pack_id", ["pack_id"])
        batch.create_foreign_key("fk_runs_pack_id", "packs", ["pack_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_pack_id", type_="foreignkey")
        batch.drop_index("ix_runs_pack_id")
        batch.drop_column("pack_size")
        batch.drop_column("pack_id")
    op.drop_table("packs")
