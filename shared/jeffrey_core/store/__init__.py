"""The durable memory store: SQLAlchemy models, engine, repository and Alembic migrations."""
