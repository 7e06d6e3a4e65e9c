"""The XMPP plugin's block lists (XEP-0191 Blocking Command): ``blocked_jids``.

Revision ID: xmpp_0004_blocking
Revises: xmpp_0003_muc
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0004_blocking'
down_revision = 'xmpp_0003_muc'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blocked_jids',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'jid'))


def downgrade() -> None:
    op.drop_table('blocked_jids')
