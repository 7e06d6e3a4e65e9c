"""The XMPP plugin's PEP tables (XEP-0163: ``pep_nodes``, ``pep_items``, ``pep_affiliations``)
and private XML storage (XEP-0049: ``private_xml``).

Revision ID: xmpp_0002
Revises: xmpp_0001
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0002'
down_revision = 'xmpp_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pep_nodes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'node'))
    op.create_index(op.f('ix_pep_nodes_account_id'), 'pep_nodes', ['account_id'], unique=False)
    op.create_table('pep_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('publisher', sa.String(length=3071), nullable=False),
    sa.Column('published_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['pep_nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_id', 'item_id'))
    op.create_index(op.f('ix_pep_items_node_id'), 'pep_items', ['node_id'], unique=False)
    op.create_table('pep_affiliations',
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('jid', sa.String(length=3071), nullable=False),
    sa.Column('affiliation', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['pep_nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('node_id', 'jid'))
    op.create_table('private_xml',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('element', sa.String(length=1279), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'element'))


def downgrade() -> None:
    op.drop_table('private_xml')
    op.drop_table('pep_affiliations')
    op.drop_index(op.f('ix_pep_items_node_id'), table_name='pep_items')
    op.drop_table('pep_items')
    op.drop_index(op.f('ix_pep_nodes_account_id'), table_name='pep_nodes')
    op.drop_table('pep_nodes')
