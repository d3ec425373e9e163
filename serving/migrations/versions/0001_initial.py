"""Initial registry schema: model versions and their audit log.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# The states as of this revision; a later revision that adds one rewrites the check constraint.
STATES = (
    "proposed",
    "evaluated",
    "queued",
    "experimenting",
    "awaiting_approval",
    "approved",
    "production",
    "rejected",
    "failed",
    "rolled_back",
    "retired",
)
PARTIAL_INDEX_DIALECTS = ("sqlite", "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("candidate_id", sa.String(255), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.CheckConstraint(f"state IN ({', '.join(repr(s) for s in STATES)})", name="ck_model_versions_state"),
    )
    op.create_index("ix_model_versions_name_state", "model_versions", ["name", "state"])
    if op.get_context().dialect.name in PARTIAL_INDEX_DIALECTS:
        # At most one production version per model line, enforced by the database itself.
        production_only = sa.text("state = 'production'")
        op.create_index(
            "uq_model_versions_one_production",
            "model_versions",
            ["name"],
            unique=True,
            sqlite_where=production_only,
            postgresql_where=production_only,
        )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_audit_log_version_id", "audit_log", ["version_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("model_versions")
