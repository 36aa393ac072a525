"""emotion model version on memories

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memories") as batch:
        batch.add_column(sa.Column("emotion_model_version", sa.String(64)))
        batch.add_column(sa.Column("annotated_at", sa.DateTime()))
    op.create_index("ix_memories_pending_emotion", "memories", ["emotion_model_version", "ingested_at"])


def downgrade() -> None:
    op.drop_index("ix_memories_pending_emotion", "memories")
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("annotated_at")
        batch.drop_column("emotion_model_version")
