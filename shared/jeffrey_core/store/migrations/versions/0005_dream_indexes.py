"""indexes for dream members and revisited singletons

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

`dream_id` on memories and consolidations: merging two dreams and reading a dream's members scanned
every user's rows. A partial index on a user's consolidated memories that joined no dream: the
revisit query of each batch read the user's whole consolidated history to return its last 100
singletons (measured with EXPLAIN ANALYZE in docs/performance.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SINGLETONS = sa.text("consolidated_at IS NOT NULL AND dream_id IS NULL")


def upgrade() -> None:
    op.create_index("ix_memories_dream", "memories", ["dream_id"])
    op.create_index("ix_consolidations_dream", "consolidations", ["dream_id"])
    op.create_index(
        "ix_memories_user_singletons",
        "memories",
        ["user_id", "created_at", "id"],
        postgresql_where=SINGLETONS,
        sqlite_where=SINGLETONS,
    )


def downgrade() -> None:
    op.drop_index("ix_memories_user_singletons", table_name="memories")
    op.drop_index("ix_consolidations_dream", table_name="consolidations")
    op.drop_index("ix_memories_dream", table_name="memories")
