"""The SQL store: models, the Database wrapper and repository functions (no network I/O inside)."""
from .database import Database, DatabaseError

__all__ = ["Database", "DatabaseError"]
