"""vcard-temp storage (XEP-0054) and pending inbound subscription requests (RFC 6121 §3.1.3).

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscription_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('stanza', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'jid')
    )
    with op.batch_alter_table('subscription_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscription_requests_account_id'), ['account_id'], unique=False)

    op.create_table('vcards',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('vcard', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id')
    )


def downgrade() -> None:
    op.drop_table('vcards')
    with op.batch_alter_table('subscription_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscription_requests_account_id'))

    op.drop_table('subscription_requests')
