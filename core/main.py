"""Console-script entry point: patch gevent first, before Flask, SQLAlchemy or psycopg import.

psycopg 3 picks a blocking wait function if it is imported before ``monkey.patch_all()``
(research/stack.md §2), so nothing else may be imported above the patch.
"""


def main() -> None:
    from gevent import monkey

    monkey.patch_all()
    from .cli import cli

    cli(prog_name="convergence")
