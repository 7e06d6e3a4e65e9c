"""The HTTP plugin's ``api_tokens`` table (bearer tokens, RFC 6750, kept as SHA-256 digests).

A database made before core revision 0004 already has the table, with rows: it is adopted as it
is. Otherwise it is created here, in the same shape.

Revision ID: http_0001
Revises: (none, the branch ``http``)
"""
from alembic import op
import sqlalchemy as sa


revision = 'http_0001'
down_revision = None
branch_labels = ('http',)
depends_on = '0004'


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('api_tokens'):
        return
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest'))
    op.create_index('ix_api_tokens_account_id', 'api_tokens', ['account_id'])


def downgrade() -> None:
    """The table is handed back as it is, rows and all (core revision 0004 gave it; at 0003 the
    core's schema has it), never dropped."""
