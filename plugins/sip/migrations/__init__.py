"""The sip plugin's own Alembic branch (label ``sip``), given to the core by ``add_migrations``."""
