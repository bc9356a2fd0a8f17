"""Storage: typed tables, the engine, one store module with every query, and Alembic migrations."""
