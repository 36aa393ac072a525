"""dreams, dream runs and consolidations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dreams",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("theme", sa.JSON(), nullable=False),
        sa.Column("term_weights", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("summary_memory_id", sa.String(36), nullable=False),
        sa.Column("dominant_emotion", sa.String(32)),
        sa.Column("emotion_weights", sa.JSON(), nullable=False),
        sa.Column("salience", sa.Float(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("first_memory_at", sa.DateTime(), nullable=False),
        sa.Column("last_memory_at", sa.DateTime(), nullable=False),
        sa.Column("centroid", sa.LargeBinary(), nullable=False),
        sa.Column("algorithm_version", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_dreams_user_created", "dreams", ["user_id", "created_at", "id"])
    op.create_table(
        "dream_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("memories_processed", sa.Integer(), nullable=False),
        sa.Column("memories_total", sa.Integer(), nullable=False),
        sa.Column("dreams_created", sa.Integer(), nullable=False),
        sa.Column("dreams_updated", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Float()),
        sa.Column("quality_weight", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer()),
        sa.Column("cursor_created_at", sa.DateTime()),
        sa.Column("cursor_id", sa.String(36)),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dream_runs_user_queued", "dream_runs", ["user_id", "queued_at", "id"])
    op.create_index("ix_dream_runs_status", "dream_runs", ["status", "updated_at"])
    op.create_table(
        "consolidations",
        sa.Column(
            "memory_id", sa.String(36), sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("dream_id", sa.String(36)),
        sa.Column("consolidated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consolidations")
    op.drop_index("ix_dream_runs_status", "dream_runs")
    op.drop_index("ix_dream_runs_user_queued", "dream_runs")
    op.drop_table("dream_runs")
    op.drop_index("ix_dreams_user_created", "dreams")
    op.drop_table("dreams")
