"""The ``convergence`` command line (click). ``convergence.main`` patches gevent, then runs ``cli``.

Exit status: 0 success, 1 a refused request (existing account, bad name or password), 2 unusable
configuration, plugin, database or listener (one line on stderr, no traceback; with the
environment variable ``CONVERGENCE_DEBUG=1`` the exception propagates with its traceback).
"""
from __future__ import annotations

import logging
import os
import secrets
import time
import sys
from pathlib import Path
from types import MappingProxyType

import click
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from . import account_import, cluster, server, supervisor
from .account_files import FileError
from .addresses import AddressError
from .config import ConfigError, load, worker_count
from .core import Core
from .credentials import PasswordError
from .plugin_manager import PluginError
from .store import DatabaseError
from .store.accounts import AccountExists, NoSuchAccount, secrets_kept

#: The original sample's walkthrough accounts (research/seed.md); sipuserf's password is generated.
DEMO_ACCOUNTS = MappingProxyType({"convergence": "1", "sipuserf": None})


class Fatal(click.ClickException):
    """Configuration, plugin, database or listener trouble: exit status 2."""

    exit_code = 2


def fatal(exc: Exception, message: str | None = None) -> Fatal:
    """``exc`` as a one-line exit-2 error; with ``CONVERGENCE_DEBUG=1`` it is raised itself, with
    its traceback. Use as ``raise fatal(exc) from None`` inside the ``except``."""
    if os.environ.get("CONVERGENCE_DEBUG", "") not in ("", "0"):
        raise exc
    return Fatal(message or str(exc))


class ConvergenceGroup(click.Group):
    """The top-level group; plugins add commands through the ``add_cli_commands`` hook."""

    def _with_plugins(self, ctx):
        if not ctx.meta.get("convergence.plugin_commands"):
            ctx.meta["convergence.plugin_commands"] = True
            get_core(ctx, migrate=False).hook.add_cli_commands(cli=self)

    def list_commands(self, ctx):
        try:
            self._with_plugins(ctx)
        except Fatal:  # --help still works with a broken configuration; commands report it
            pass
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or (self._with_plugins(ctx) or super().get_command(ctx, name))

    def invoke(self, ctx):
        """Run the command; a database failure in any command (busy, read-only, gone) is one line."""
        try:
            return super().invoke(ctx)
        except DatabaseError as exc:
            raise fatal(exc) from None
        except SQLAlchemyError as exc:
            core = ctx.meta.get("convergence.core")
            raise fatal(exc, str(core.db.error(exc)) if core else None) from None


def get_core(ctx: click.Context, migrate: bool = True, overrides: dict | None = None) -> Core:
    """The Core for this invocation, built once; errors become one-line exit-2 messages.

    Plugin objects given as ``obj={"plugins": {name: plugin}}`` to ``cli.main`` (or to click's
    ``CliRunner.invoke``) are registered next to the installed ones: how an embedding program or a
    test adds plugins to the command line without installing a distribution."""
    root = ctx.find_root()
    core = root.meta.get("convergence.core")
    try:
        if core is None:
            # --help runs before --config is read: fall back to the environment there.
            config = load(root.params.get("config") or os.environ.get("CONVERGENCE_CONFIG"), overrides)
            logging.basicConfig(level=config["server"]["log_level"].upper(),
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            if config["server"]["log_level"] != "debug":
                logging.getLogger("alembic").setLevel(logging.WARNING)
            plugins = (root.obj or {}).get("plugins")
            core = root.meta["convergence.core"] = Core.create(config, plugins=plugins)
            root.call_on_close(core.close)
        if migrate:
            core.db.upgrade()
    except (ConfigError, PluginError, DatabaseError) as exc:
        raise fatal(exc) from None
    return core


@click.group(cls=ConvergenceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="CONVERGENCE_CONFIG",
              help="TOML configuration file (default: $CONVERGENCE_CONFIG, else built-in defaults).")
@click.version_option(package_name="convergence")
def cli(config):
    """Convergence: one IM server for SIP phones, XMPP clients and HTTP."""


@cli.command()
@click.option("--demo", is_flag=True, help="Also create the sample's demo accounts "
              "(convergence / 1, and sipuserf with a printed password).")
@click.option("--workers", help='Worker processes sharing the listeners ("auto": one per core; '
              "default: [server] workers); more than 1 needs PostgreSQL and Redis (docs/cluster.md).")
@click.option("--worker", type=click.IntRange(0), hidden=True, help="(the supervisor's) run as worker N")
@click.pass_context
def serve(ctx, demo, workers, worker):
    """Migrate the database and serve until SIGTERM or Ctrl-C."""
    core = get_core(ctx)
    try:
        count = core.config["server"]["workers"] if workers is None else worker_count(
            int(workers) if workers.isdigit() else workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    try:
        server.check_cluster_database(core, count)
    except ConfigError as exc:
        raise Fatal(str(exc)) from None
    if demo:
        for name, password in DEMO_ACCOUNTS.items():
            password = password or secrets.token_urlsafe(9)
            try:
                core.add_account(name, password)
                click.echo(f"demo account {name}@{core.domain} created, password: {password}")
            except AccountExists:
                click.echo(f"demo account {name}@{core.domain} exists "
                           f"(set its password with: convergence user passwd {name})")
    try:
        if worker is None and count > 1:
            ctx.exit(supervisor.supervise(ctx.find_root().params.get("config"), count, core.domain))
        server.serve(core, worker)
    except (server.ListenError, ConfigError) as exc:  # a plugin's on_startup may refuse its settings
        raise Fatal(str(exc)) from None


@cli.group("cluster")
def cluster_group():
    """Several processes or machines as one server (docs/cluster.md)."""


@cluster_group.command("status")
@click.pass_context
def cluster_status(ctx):
    """List the live nodes (workers too): endpoints, directory size, heartbeat age."""
    core = get_core(ctx, migrate=False)
    settings = core.config["cluster"]
    client = cluster.connect(core.config)
    try:
        nodes = cluster.read_status(client, settings["prefix"])
    except Exception as exc:  # redis.RedisError, OSError: one line, exit 2
        raise Fatal(f"cannot read the cluster from {settings['redis']}: {exc}") from None
    finally:
        client.close()
    for line in cluster.status_lines(nodes):
        click.echo(line)
    if not nodes:
        ctx.exit(1)


# ---- user ---------------------------------------------------------------------------------------

@cli.group()
def user():
    """Manage accounts (name@domain is both the JID and the SIP AOR)."""


def _password(password: str | None) -> str:
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def no_account(core: Core, name: str) -> click.ClickException:
    """The refusal for an unknown account, naming the database (a relative data_dir run from
    another folder is another, empty, database). For plugins' commands too."""
    return click.ClickException(f"no account {name!r} in {core.database_location}")


@user.command("add")
@click.argument("name")
@click.option("--password", "-p", help="The password (prompted for when omitted).")
@click.pass_context
def user_add(ctx, name, password):
    """Create the account NAME."""
    core = get_core(ctx)
    try:
        address = core.add_account(name, _password(password))
    except (AddressError, PasswordError) as exc:
        raise click.ClickException(f"cannot add {name!r}: {exc}") from None
    except AccountExists:
        raise click.ClickException(f"account {name!r} already exists") from None
    click.echo(f"added {address}")


@user.command("del")
@click.argument("name")
@click.pass_context
def user_del(ctx, name):
    """Delete the account NAME with its roster, bindings and stored messages."""
    core = get_core(ctx)
    try:
        core.delete_account(name)
    except (AddressError, NoSuchAccount):
        raise no_account(core, name) from None
    click.echo(f"deleted {name}")


@user.command("list")
@click.pass_context
def user_list(ctx):
    """List the accounts, one address a line (marked when imported keys lack a secret)."""
    core = get_core(ctx)
    digest = "digest" in account_import.wanted_secrets(core)
    for name, has_digest, both_scram in secrets_kept(core.db):
        missing = [what for what, lacking in (("no digest secret", digest and not has_digest),
                                              ("one SCRAM hash", not both_scram)) if lacking]
        click.echo(f"{core.address(name)}" + (f"  ({', '.join(missing)} until a password is set)"
                                              if missing else ""))


@user.command("import")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "kind", type=click.Choice(["csv", "xep0227", "prosody"]),
              help="The file's format (default: Prosody for a folder, XEP-0227 for a file that "
                   "starts with '<', else CSV).")
@click.option("--jobs", "-j", type=click.IntRange(1), help="Processes deriving keys (default: one per core).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when standard error is a terminal).")
@click.pass_context
def user_import(ctx, file, kind, jobs, progress):
    """Create the accounts listed in FILE: CSV name,password, XEP-0227 (ejabberd's export) or
    a Prosody accounts folder (<data_path>/<host>/accounts).

    All new accounts are created in one transaction; existing ones are skipped, bad records
    refused with their reason. Exit status 1 when a record was refused."""
    core = get_core(ctx)
    bars = []

    def bar(total):
        bars.append(tqdm(total=total, unit="account", disable=None if progress is None else not progress,
                         desc="deriving keys", file=sys.stderr))
        return bars[-1].update
    try:
        summary = account_import.import_file(core, file, kind, jobs, bar)
    except FileError as exc:
        raise click.ClickException(f"cannot import: {exc}") from None
    finally:
        for b in bars:
            b.close()
    click.echo(f"{file}: {len(summary.created)} created, {len(summary.skipped)} skipped (they exist), "
               f"{len(summary.refused)} refused")
    for refusal in summary.refused:
        click.echo(f"  refused {refusal.where}: {refusal.name!r}: {refusal.reason}")
    if summary.from_keys:
        click.echo(f"{summary.from_keys} created from SCRAM keys, without a password: they log in with "
                   f"SCRAM but have no digest secret (SIP) until a password is set "
                   f"(convergence user passwd NAME)"
                   + (f"; {summary.one_hash} of them with one SCRAM hash's keys only"
                      if summary.one_hash else ""))
    if summary.ignored:
        click.echo("not imported (accounts only): " + ", ".join(
            f"{tag} ×{count}" for tag, count in sorted(summary.ignored.items())))
    if summary.refused:
        ctx.exit(1)


@user.command("export")
@click.argument("file", default="-", type=click.Path(path_type=Path, allow_dash=True))
@click.option("--format", "kind", type=click.Choice(["xep0227", "prosody"]), default="xep0227",
              help="XEP-0227 to FILE (or stdout), or Prosody's store under the data_path FILE.")
@click.pass_context
def user_export(ctx, file, kind):
    """Write every account with its stored SCRAM keys (no password): XEP-0227 to FILE or stdout,
    or Prosody's internal_hashed files under FILE/<host>/accounts/."""
    core = get_core(ctx)
    if kind == "prosody":
        if str(file) == "-":
            raise click.UsageError("--format prosody needs a folder (Prosody's data_path)")
        try:
            count, left_out = account_import.export_prosody(core, file)
        except (FileExistsError, OSError) as exc:
            raise click.ClickException(f"cannot export: {exc}") from None
        click.echo(f"{count} accounts written under {file}", err=True)
        if left_out:
            click.echo(f"left out (no SCRAM-SHA-1 keys, set a password first): {', '.join(left_out)}", err=True)
        return
    with click.open_file(str(file), "w", encoding="utf-8", atomic=str(file) != "-") as out:
        count = account_import.export(core, out)
    if str(file) != "-":
        click.echo(f"{count} accounts written to {file}", err=True)


@user.command("passwd")
@click.argument("name")
@click.option("--password", "-p", help="The new password (prompted for when omitted).")
@click.pass_context
def user_passwd(ctx, name, password):
    """Set the password of NAME (SCRAM keys and SIP digest HA1 are re-derived)."""
    core = get_core(ctx)
    try:
        core.set_password(name, _password(password))
    except (AddressError, NoSuchAccount):
        raise no_account(core, name) from None
    except PasswordError as exc:
        raise click.ClickException(f"cannot set password: {exc}") from None
    click.echo(f"password of {name} changed")


# ---- db -----------------------------------------------------------------------------------------

@cli.group()
def db():
    """Database schema (Alembic migrations shipped with the package)."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx):
    """Migrate the database to the newest revision."""
    core = get_core(ctx)
    click.echo(f"database at revision {', '.join(sorted(core.db.current()[0]))}")


@db.command("current")
@click.pass_context
def db_current(ctx):
    """Show the database's revision and the newest one shipped."""
    core = get_core(ctx, migrate=False)
    try:
        current, heads, up_to_date = core.db.current()
    except DatabaseError as exc:
        raise Fatal(str(exc)) from None
    state = "up to date" if up_to_date else "needs `convergence db upgrade`"
    click.echo(f"current: {', '.join(sorted(current)) or '(empty)'}  "
               f"head: {', '.join(sorted(heads))}  ({state})")


@db.command("revision")
@click.argument("message")
@click.pass_context
def db_revision(ctx, message):
    """(Developers) autogenerate a migration from changed models into migrations/versions/."""
    get_core(ctx).db.revision(message)


# ---- status -------------------------------------------------------------------------------------

@cli.command("status")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between the two questions the rates come from (0: no rates).")
@click.pass_context
def status_cmd(ctx, interval):
    """Ask the running server: endpoints, logins and message rates per protocol, gauges."""
    from . import status
    from .control import NoServer

    core = get_core(ctx, migrate=False)
    try:
        first = core.control.ask("status")
        second = None
        if interval:
            time.sleep(interval)  # the rates are the difference between two answers
            second = core.control.ask("status")
    except NoServer as exc:
        raise click.ClickException(str(exc)) from None
    for line in status.report(second or first, first if second else None):
        click.echo(line)


# ---- plugins ------------------------------------------------------------------------------------

@cli.command("plugins")
@click.pass_context
def plugins_cmd(ctx):
    """List loaded plugins, their distribution and the hooks each implements."""
    core = get_core(ctx, migrate=False)
    for name, dist, hooks in core.pm.describe():
        click.echo(f"{name:<10} {dist:<28} {', '.join(hooks)}")
