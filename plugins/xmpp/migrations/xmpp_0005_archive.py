"""The XMPP plugin's message archive (XEP-0313): ``mam_messages`` and ``mam_prefs``.

Revision ID: xmpp_0005_archive
Revises: xmpp_0004_blocking
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0005_archive'
down_revision = 'xmpp_0004_blocking'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mam_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('stanza_id', sa.String(length=64), nullable=False),
    sa.Column('with_jid', sa.String(length=3071), nullable=False),
    sa.Column('with_bare', sa.String(length=2047), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('stanza', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'stanza_id'))
    op.create_index('ix_mam_messages_account_with', 'mam_messages', ['account_id', 'with_bare'], unique=False)
    op.create_index(op.f('ix_mam_messages_created_at'), 'mam_messages', ['created_at'], unique=False)
    op.create_table('mam_prefs',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('default', sa.String(length=8), nullable=False),
    sa.Column('always', sa.JSON(), nullable=False),
    sa.Column('never', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id'))


def downgrade() -> None:
    op.drop_table('mam_prefs')
    op.drop_index(op.f('ix_mam_messages_created_at'), table_name='mam_messages')
    op.drop_index('ix_mam_messages_account_with', table_name='mam_messages')
    op.drop_table('mam_messages')
