"""The http plugin's own Alembic branch (label ``http``), given to the core by ``add_migrations``."""
