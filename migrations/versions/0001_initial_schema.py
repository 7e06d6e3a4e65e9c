"""Initial schema: accounts, SIP bindings, roster items, offline messages.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 06:57:02.890334
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = ('convergence',)
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=1023), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('scram_salt', sa.LargeBinary(length=64), nullable=False),
    sa.Column('scram_iterations', sa.Integer(), nullable=False),
    sa.Column('scram_sha1_stored_key', sa.LargeBinary(length=20), nullable=False),
    sa.Column('scram_sha1_server_key', sa.LargeBinary(length=20), nullable=False),
    sa.Column('scram_sha256_stored_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('scram_sha256_server_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('digest_realm', sa.String(length=255), nullable=False),
    sa.Column('digest_ha1_md5', sa.String(length=32), nullable=False),
    sa.Column('digest_ha1_sha256', sa.String(length=64), nullable=False),
    sa.Column('roster_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('offline_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('stored_at', sa.DateTime(), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('sender', sa.String(length=3071), nullable=False),
    sa.Column('recipient', sa.String(length=3071), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('thread', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('offline_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offline_messages_account_id'), ['account_id'], unique=False)

    op.create_table('roster_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('name', sa.String(length=1023), nullable=True),
    sa.Column('subscription', sa.String(length=8), nullable=False),
    sa.Column('ask', sa.Boolean(), nullable=False),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'jid')
    )
    with op.batch_alter_table('roster_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_items_account_id'), ['account_id'], unique=False)

    op.create_table('sip_bindings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('contact', sa.String(length=1024), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('q', sa.Float(), nullable=True),
    sa.Column('call_id', sa.String(length=255), nullable=False),
    sa.Column('cseq', sa.Integer(), nullable=False),
    sa.Column('received', sa.String(length=255), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('instance', sa.String(length=255), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'contact')
    )
    with op.batch_alter_table('sip_bindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sip_bindings_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sip_bindings_expires_at'), ['expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sip_bindings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sip_bindings_expires_at'))
        batch_op.drop_index(batch_op.f('ix_sip_bindings_account_id'))

    op.drop_table('sip_bindings')
    with op.batch_alter_table('roster_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_items_account_id'))

    op.drop_table('roster_items')
    with op.batch_alter_table('offline_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offline_messages_account_id'))

    op.drop_table('offline_messages')
    op.drop_table('accounts')
