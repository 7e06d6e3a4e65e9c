"""``convergence token``: bearer tokens of the HTTP API (RFC 6750), added by ``add_cli_commands``.

Exit status as for every command: 0 done, 1 refused (no such account or token), 2 configuration.
"""
import click

from convergence.addresses import AddressError
from convergence.cli import get_core, no_account
from convergence.store.accounts import NoSuchAccount

from . import tokens


@click.group("token")
def token():
    """HTTP API bearer tokens (only a SHA-256 of each is stored)."""


def _account(core, user: str):
    try:
        return core.address(user)
    except AddressError:
        raise no_account(core, user) from None


@token.command("create")
@click.argument("user")
@click.option("--name", "-n", default="", help="A label to recognise the token by in `token list`.")
@click.pass_context
def token_create(ctx, user, name):
    """Create a token for USER and print it (it is shown only this once)."""
    core = get_core(ctx)
    account = _account(core, user)
    try:
        token_id, secret = tokens.create(core.db, account.local, name)
    except NoSuchAccount:
        raise no_account(core, user) from None
    click.echo(f"token {token_id} for {account}; keep it now, it cannot be shown again:", err=True)
    click.echo(secret)


@token.command("list")
@click.argument("user")
@click.pass_context
def token_list(ctx, user):
    """List USER's tokens: id, creation time (UTC) and label."""
    core = get_core(ctx)
    try:
        infos = tokens.tokens(core.db, _account(core, user).local)
    except NoSuchAccount:
        raise no_account(core, user) from None
    for info in infos:
        click.echo(f"{info.id}\t{info.created_at.isoformat(' ', 'seconds')}\t{info.name}")


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@click.pass_context
def token_revoke(ctx, token_id):
    """Delete token ID; requests with it get 401 from now on."""
    if not tokens.revoke(get_core(ctx).db, token_id):
        raise click.ClickException(f"no token {token_id}")
    click.echo(f"revoked token {token_id}")
