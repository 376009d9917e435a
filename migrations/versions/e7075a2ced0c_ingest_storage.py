"""ingest storage: room for HOT updates in piles, ports and charging_sessions; pile_inbox keyed by (pile_id, boot_id, seq)

Revision ID: e7075a2ced0c
Revises: f75e9e5d30d6
Create Date: 2026-11-25 03:45:09.757786

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e7075a2ced0c'
down_revision = 'f75e9e5d30d6'
branch_labels = None
depends_on = None

# The rows the bridge rewrites on every batch (app.models.piles.HOT_UPDATE_STORAGE).
HOT_UPDATE_TABLES = ('piles', 'ports', 'charging_sessions')
FILLFACTOR = 70


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        # A storage parameter only: pages written from now on keep the room, existing
        # rows get it when their table is next rewritten (no VACUUM FULL here: it would
        # lock the table against the bridge).
        for table in HOT_UPDATE_TABLES:
            op.execute(f'ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})')
        # The natural key's index is built beside the old one without blocking the
        # bridge's inserts (CONCURRENTLY cannot run in a transaction); the swap is then
        # catalog changes only (dropping a column does not rewrite the table).
        with op.get_context().autocommit_block():
            op.execute('DROP INDEX CONCURRENTLY IF EXISTS pk_pile_inbox_natural')
            op.execute('CREATE UNIQUE INDEX CONCURRENTLY pk_pile_inbox_natural '
                       'ON pile_inbox (pile_id, boot_id, seq)')
        op.execute('ALTER TABLE pile_inbox DROP CONSTRAINT pk_pile_inbox')
        op.execute('ALTER TABLE pile_inbox DROP CONSTRAINT uq_pile_inbox_pile_id_boot_id_seq')
        op.execute('ALTER TABLE pile_inbox DROP COLUMN id')
        op.execute('ALTER TABLE pile_inbox ADD CONSTRAINT pk_pile_inbox '
                   'PRIMARY KEY USING INDEX pk_pile_inbox_natural')
    else:
        with op.batch_alter_table('pile_inbox', schema=None, recreate='always') as batch_op:
            batch_op.drop_constraint('uq_pile_inbox_pile_id_boot_id_seq', type_='unique')
            batch_op.drop_column('id')
            batch_op.create_primary_key('pk_pile_inbox', ['pile_id', 'boot_id', 'seq'])


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE pile_inbox DROP CONSTRAINT pk_pile_inbox')
        op.execute('ALTER TABLE pile_inbox ADD COLUMN id BIGSERIAL')  # numbers the rows
        op.execute('ALTER TABLE pile_inbox ADD CONSTRAINT pk_pile_inbox PRIMARY KEY (id)')
        op.execute('ALTER TABLE pile_inbox ADD CONSTRAINT uq_pile_inbox_pile_id_boot_id_seq '
                   'UNIQUE (pile_id, boot_id, seq)')
        for table in HOT_UPDATE_TABLES:
            op.execute(f'ALTER TABLE {table} RESET (fillfactor)')
    else:
        with op.batch_alter_table('pile_inbox', schema=None, recreate='always') as batch_op:
            batch_op.drop_constraint('pk_pile_inbox', type_='primary')
            # INTEGER PRIMARY KEY is SQLite's rowid: the copied rows are numbered
            batch_op.add_column(sa.Column('id', sa.Integer(), nullable=False))
            batch_op.create_primary_key('pk_pile_inbox', ['id'])
            batch_op.create_unique_constraint('uq_pile_inbox_pile_id_boot_id_seq',
                                              ['pile_id', 'boot_id', 'seq'])
