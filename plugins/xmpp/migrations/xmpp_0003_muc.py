"""The XMPP plugin's Multi-User Chat tables (XEP-0045 persistent rooms): ``muc_rooms``,
``muc_affiliations`` and ``muc_history``.

Revision ID: xmpp_0003_muc
Revises: xmpp_0002
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0003_muc'
down_revision = 'xmpp_0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('muc_rooms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=1023), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('subject_by', sa.String(length=1023), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'))
    op.create_table('muc_affiliations',
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('affiliation', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['room_id'], ['muc_rooms.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('room_id', 'jid'))
    op.create_table('muc_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('nick', sa.String(length=1023), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('stamp', sa.DateTime(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('extra', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['room_id'], ['muc_rooms.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_muc_history_room_id'), 'muc_history', ['room_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_muc_history_room_id'), table_name='muc_history')
    op.drop_table('muc_history')
    op.drop_table('muc_affiliations')
    op.drop_table('muc_rooms')
