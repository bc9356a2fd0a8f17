"""Accounts: users with roles and limits, personal API tokens, an owner on every run and sweep, and what fair-share
dispatch needs on a run: its priority and the queue (device) it asked for; and the workers as they report themselves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("email", sa.String(255), unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False, server_default="1"),
        sa.Column("max_running", sa.Integer()),
        sa.Column("max_queued", sa.Integer()),
        sa.Column("gpu_hours_per_week", sa.Float()),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float()),
        sa.Column("expires_at", sa.Float()),
        sa.Column("revoked_at", sa.Float()),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_index("ix_api_tokens_prefix", "api_tokens", ["prefix"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("celery_name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("device", sa.String(200), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("drain", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("stats", sa.JSON(), nullable=False),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("queue", sa.String(16), nullable=False, server_default="auto"))
        batch.create_foreign_key("fk_runs_owner_id_users", "users", ["owner_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_runs_owner_id", ["owner_id"])
        batch.create_index("ix_runs_queue", ["queue"])
    runs = sa.table("runs", sa.column("id", sa.Integer()), sa.column("spec", sa.JSON()),
                    sa.column("queue", sa.String()), sa.column("status", sa.String()))  # fmt: skip
    connection = op.get_bind()
    for run_id, spec in connection.execute(sa.select(runs.c.id, runs.c.spec).where(runs.c.status == "queued")):
        device = (spec or {}).get("device", "auto")
        if device != "auto":  # the queue a queued run's message went to
            connection.execute(sa.update(runs).where(runs.c.id == run_id).values(queue=device))
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_sweeps_owner_id_users", "users", ["owner_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_sweeps_owner_id", ["owner_id"])


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_index("ix_sweeps_owner_id")
        batch.drop_constraint("fk_sweeps_owner_id_users", type_="foreignkey")
        batch.drop_column("owner_id")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_queue")
        batch.drop_index("ix_runs_owner_id")
        batch.drop_constraint("fk_runs_owner_id_users", type_="foreignkey")
        batch.drop_column("queue")
        batch.drop_column("priority")
        batch.drop_column("owner_id")
    op.drop_table("workers")
    op.drop_table("web_sessions")
    op.drop_table("api_tokens")
    op.drop_table("users")
