"""Bearer tokens as an operator and a client use them: ``convergence token`` against a running
server's database (once as a real process, then in-process through click for speed; the same
command either way), then the API with and without the token."""
import subprocess

from api_client import EventStream, call
from click.testing import CliRunner

from convergence.cli import cli

def token_cli(server, *args):
    result = CliRunner().invoke(cli, ["--config", str(server.process.config_path), "token", *args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_create_use_list_revoke(convergence_server, run_convergence):
    server = convergence_server({"alice": "pw-a"})
    created = run_convergence("--config", server.process.config_path, "token", "create", "alice",
                              "--name", "laptop")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert len(token) == 43 and "token 1 for alice@example.org" in created.stderr
    roster = call(server, "GET", "/api/roster", token=token)
    assert roster.status == 200
    assert EventStream(server, token=token).jid.startswith("alice@example.org/http-")
    sent = call(server, "POST", "/api/messages", {"to": "echo@example.org", "body": "hi"}, token=token)
    assert sent.status == 200
    listed = token_cli(server, "list", "alice")
    assert listed.returncode == 0 and listed.stdout.startswith("1\t") and \
        listed.stdout.rstrip().endswith("\tlaptop") and token not in listed.stdout
    assert token_cli(server, "revoke", "1").returncode == 0
    revoked = call(server, "GET", "/api/roster", token=token)
    assert revoked.status == 401
    assert 'error="invalid_token"' in revoked.headers["WWW-Authenticate"]
    assert token_cli(server, "list", "alice").stdout == ""


def test_refused_token_requests_exit_1(convergence_server):
    server = convergence_server({"alice": "pw-a"})
    for args, message in [(["create", "nobody"], "no account 'nobody'"),
                          (["create", "a b"], "no account 'a b'"),
                          (["list", "nobody"], "no account 'nobody'"),
                          (["revoke", "99"], "no token 99")]:
        result = token_cli(server, *args)
        assert (result.returncode, result.stdout) == (1, ""), result
        assert message in result.stderr
    assert token_cli(server, "revoke", "x").returncode == 2  # click: not an integer


def test_a_made_up_token_is_401(convergence_server):
    server = convergence_server({"alice": "pw-a"})
    assert call(server, "GET", "/api/roster", token="x" * 43).status == 401
