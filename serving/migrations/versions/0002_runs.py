"""The index of runs: evolution runs and A/B experiments by human name, with their folders and reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

KINDS = ("evolution", "experiment")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("folder", sa.Text(), nullable=False, unique=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("pipeline", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in KINDS)})", name="ck_runs_kind"),
    )


def downgrade() -> None:
    op.drop_table("runs")
