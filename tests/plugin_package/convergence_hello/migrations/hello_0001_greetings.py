"""The hello plugin's own table: the greetings it sent.

Revision ID: hello_0001
Revises: (none, its own branch)
"""
import sqlalchemy as sa
from alembic import op

revision = "hello_0001"
down_revision = None
branch_labels = ("hello",)
depends_on = "0001"


def upgrade() -> None:
    op.create_table("hello_greetings",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("recipient", sa.String(3071), nullable=False))


def downgrade() -> None:
    op.drop_table("hello_greetings")
