"""Alembic environment: runs migrations online against the URL that db.migrate put in the config."""

from __future__ import annotations

from alembic import context

from db.engine import get_engine
from db.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from workers.settings import get_settings

    url = get_settings().database_url

with get_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
