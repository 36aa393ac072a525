"""memories and idempotency keys

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lang", sa.String(8)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("emotion_label", sa.String(32)),
        sa.Column("emotion", sa.JSON()),
        sa.Column("consolidated_at", sa.DateTime()),
        sa.Column("consolidation_run_id", sa.String(36)),
        sa.Column("dream_id", sa.String(36)),
        sa.Column("embedding", sa.LargeBinary()),
        sa.Column("embedding_model", sa.String(64)),
    )
    op.create_index("ix_memories_user_created", "memories", ["user_id", "created_at", "id"])
    op.create_index("ix_memories_user_consolidated", "memories", ["user_id", "consolidated_at"])
    op.create_index("ix_memories_user_emotion", "memories", ["user_id", "emotion_label"])
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_memories_user_emotion", "memories")
    op.drop_index("ix_memories_user_consolidated", "memories")
    op.drop_index("ix_memories_user_created", "memories")
    op.drop_table("memories")
