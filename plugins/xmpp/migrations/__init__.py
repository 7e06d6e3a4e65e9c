"""The xmpp plugin's own Alembic branch (label ``xmpp``), given to the core by ``add_migrations``."""
