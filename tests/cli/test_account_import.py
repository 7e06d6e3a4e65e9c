"""``convergence user import|export`` (issue 17): accounts in bulk from CSV and XEP-0227, then real
logins with slixmpp and SIPp; SCRAM-key accounts refused by SIP digest until a password is set;
export → import keeps every key; a failed import creates nothing."""
import base64
import shutil
import socket
import sqlite3
import subprocess
import time

import pytest

from convergence import credentials
from convergence.config import load
from convergence.core import Core
from convergence.store import accounts
from convergence.testing import create_schema, free_port
from scenario_kit import LoginFailed
from sipp_runner import Sipp, needs_sipp, register

from . import write_config

DOMAIN = "example.org"


def csv_of(count: int) -> str:
    return "name,password\n" + "".join(f"user{i},pw-{i}\n" for i in range(count))


def registers(server, tmp_path, name: str, password: str, expect: int) -> None:
    """SIPp registers as ``name``: the answer to its authenticated REGISTER is ``expect``."""
    folder = tmp_path / f"sipp-{name}-{expect}"
    folder.mkdir(exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    body = register(1, f"<sip:{name}@127.0.0.1:{port}>", 300)
    if expect != 200:
        body = body.replace('<recv response="200"/>', f'<recv response="{expect}"/>')
    Sipp(server.sip_port, folder).run(f"register-{name}", body, port=port, user=name, password=password)


@needs_sipp
def test_csv_import_of_1000_accounts_then_xmpp_and_sip_logins(convergence_server, xmpp_client, tmp_path, run_cli):
    server = convergence_server({"user7": "old-password"})
    (tmp_path / "people.csv").write_text(csv_of(1000) + "bad name,x\nuser3,again\n")
    started = time.monotonic()
    result = run_cli(server.process.config_path, "user", "import", tmp_path / "people.csv")
    print(f"1000-account CSV import: {time.monotonic() - started:.1f} s")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # 2 refused
    lines = result.stdout.splitlines()
    assert lines[0].endswith("999 created, 1 skipped (they exist), 2 refused"), result.stdout
    assert lines[1] == "  refused line 1002: 'bad name': localpart 'bad name' contains a space or control character"
    assert lines[2] == "  refused line 1003: 'user3': listed before (line 5)"
    # The running server heard of each (PostgreSQL: NOTIFYs sent by the import's one commit).
    server.process.wait_for("account user999@example.org created (announced by another process)")
    # (On PostgreSQL the channel is the database's: other tests' changes may be heard too.)
    heard = {line.split(" account ")[1].split("@")[0] for line in server.process.output
             if "created (announced by another process)" in line}
    assert heard >= {f"user{i}" for i in range(1000) if i != 7}
    listed = run_cli(server.process.config_path, "user", "list").stdout.splitlines()
    assert len(listed) == 1000 and "user999@example.org" in listed and "(" not in "".join(listed)

    for i in (0, 500, 999):
        assert xmpp_client(server, f"user{i}", f"pw-{i}", presence=False).jid.startswith(f"user{i}@")
    assert xmpp_client(server, "user7", "old-password", presence=False)  # skipped: unchanged
    for i in (1, 998):
        registers(server, tmp_path, f"user{i}", f"pw-{i}", 200)


def scram_xml(name: str, creds, mechanisms=("SCRAM-SHA-1", "SCRAM-SHA-256"), extra: str = "") -> str:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    sets = "".join(
        f"<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{m}'>"
        f"<iter-count>{creds.iterations}</iter-count><salt>{b64(creds.salt)}</salt>"
        f"<server-key>{b64(keys.server_key)}</server-key><stored-key>{b64(keys.stored_key)}</stored-key>"
        f"</scram-credentials>"
        for m, keys in (("SCRAM-SHA-1", creds.sha1), ("SCRAM-SHA-256", creds.sha256)) if m in mechanisms)
    return f"<user name='{name}'>{sets}{extra}</user>\n"


@needs_sipp
def test_xep0227_scram_keys_log_in_over_xmpp_and_sip_digest_refuses_them(convergence_server, xmpp_client,
                                                                           tmp_path, run_cli):
    server = convergence_server({})
    juliet = credentials.derive("juliet", DOMAIN, "balcony", iterations=4096)
    romeo = credentials.derive("romeo", DOMAIN, "montague", iterations=10000)
    (tmp_path / "ejabberd.xml").write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='example.org'>\n"
        + scram_xml("juliet", juliet)
        + scram_xml("romeo", romeo, ("SCRAM-SHA-1",),
                    "<query xmlns='jabber:iq:roster'><item jid='juliet@example.org'/></query>")
        + "<user name='nurse' password='herbs'/>\n"
        + "<user name='tybalt'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-512'>"
          "<iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AA==</server-key>"
          "<stored-key>AA==</stored-key></scram-credentials></user>\n"
        + "</host>\n<host jid='elsewhere.example'><user name='mercutio' password='x'/></host>\n"
        "</server-data>\n")
    result = run_cli(server.process.config_path, "user", "import", tmp_path / "ejabberd.xml")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "3 created, 0 skipped (they exist), 2 refused" in out
    assert "'tybalt': SCRAM-SHA-512 is not one this server uses" in out
    assert "'mercutio': host 'elsewhere.example' is not this server's domain example.org" in out
    assert "2 created from SCRAM keys" in out and "1 of them with one SCRAM hash's keys only" in out
    assert "{jabber:iq:roster}query ×1" in out
    listed = run_cli(server.process.config_path, "user", "list").stdout.splitlines()
    assert listed == ["juliet@example.org  (no digest secret until a password is set)",
                      "nurse@example.org",
                      "romeo@example.org  (no digest secret, one SCRAM hash until a password is set)"]

    assert xmpp_client(server, "juliet", "balcony", presence=False)  # the client's choice (SHA-256)
    assert xmpp_client(server, "juliet", "balcony", mechanism="PLAIN", presence=False)
    assert xmpp_client(server, "romeo", "montague", mechanism="SCRAM-SHA-1", presence=False)
    assert xmpp_client(server, "romeo", "montague", mechanism="PLAIN", presence=False)  # SHA-1 keys
    with pytest.raises(LoginFailed):
        xmpp_client(server, "romeo", "wrong", mechanism="PLAIN", presence=False)
    assert xmpp_client(server, "nurse", "herbs", presence=False)
    with pytest.raises(LoginFailed):
        xmpp_client(server, "juliet", "wrong", mechanism="SCRAM-SHA-1", presence=False)

    registers(server, tmp_path, "juliet", "balcony", 401)  # no HA1: refused, the server goes on
    registers(server, tmp_path, "nurse", "herbs", 200)
    assert run_cli(server.process.config_path, "user", "passwd", "juliet", "-p", "balcony").returncode == 0
    server.process.wait_for("account juliet@example.org changed (announced by another process)")
    registers(server, tmp_path, "juliet", "balcony", 200)  # a password set: digest works


@pytest.fixture
def second_database(request):
    """A second, empty database for the other side of a move: SQLite, or a PostgreSQL schema."""
    url = request.config.getoption("convergence_database")
    schema_url, drop = create_schema(url) if url else ("", None)
    yield schema_url
    drop and drop()


def stored(config) -> dict:
    core = Core.create(load(str(config)))
    try:
        return dict(accounts.every_credentials(core.db))
    finally:
        core.close()


def test_export_then_import_elsewhere_keeps_every_key(tmp_path, database_url, second_database, run_cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = write_config(tmp_path / "a" / "c.toml", database_url)
    new = write_config(tmp_path / "b" / "c.toml", second_database)
    (tmp_path / "people.csv").write_text(csv_of(30))
    assert run_cli(old, "user", "import", tmp_path / "people.csv").returncode == 0
    exported = run_cli(old, "user", "export", tmp_path / "export.xml")
    assert exported.returncode == 0 and exported.stderr.strip().endswith("30 accounts written to "
                                                                          f"{tmp_path / 'export.xml'}")
    text = (tmp_path / "export.xml").read_text()
    assert "pw-" not in text and "password" not in text

    result = run_cli(new, "user", "import", tmp_path / "export.xml")
    assert result.returncode == 0, result.stderr
    assert "30 created, 0 skipped (they exist), 0 refused" in result.stdout
    assert "30 created from SCRAM keys" in result.stdout
    before, after = stored(old), stored(new)
    assert sorted(after) == sorted(before) == sorted(f"user{i}" for i in range(30))
    for name, creds in after.items():
        was = before[name]
        assert (creds.salt, creds.iterations, creds.sha1, creds.sha256) == \
               (was.salt, was.iterations, was.sha1, was.sha256)
        assert creds.ha1_md5 == creds.ha1_sha256 == "" and was.ha1_md5
        assert credentials.verify(creds, f"pw-{name[4:]}")
    assert run_cli(new, "user", "export").stdout == text  # the same file back
    again = run_cli(new, "user", "import", tmp_path / "export.xml")
    assert again.returncode == 0 and "0 created, 30 skipped (they exist), 0 refused" in again.stdout

    # Prosody's store (internal_hashed, SCRAM-SHA-1 keys): read back, the same keys.
    assert run_cli(new, "user", "export", "--format", "prosody", tmp_path / "prosody").returncode == 0
    folder = tmp_path / "prosody" / "example%2eorg" / "accounts"
    assert len(list(folder.glob("*.dat"))) == 30
    (tmp_path / "c").mkdir()
    third = write_config(tmp_path / "c" / "c.toml") if not database_url else None
    if third:  # (a third database: SQLite only)
        assert run_cli(third, "user", "import", folder).returncode == 0
        for name, creds in stored(third).items():
            assert (creds.salt, creds.iterations, creds.sha1) == \
                   (before[name].salt, before[name].iterations, before[name].sha1)
    refused = run_cli(new, "user", "export", "--format", "prosody", tmp_path / "prosody")
    assert refused.returncode == 1 and "is not empty" in refused.stderr


def test_a_failed_import_creates_no_account(tmp_path, database_url, run_cli):
    if database_url:
        pytest.skip("holds SQLite's write lock")
    config = write_config(tmp_path / "c.toml")
    assert run_cli(config, "db", "upgrade").returncode == 0
    (tmp_path / "people.csv").write_text(csv_of(120))
    holder = sqlite3.connect(tmp_path / "data" / "convergence.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer for longer than the busy timeout
    try:
        result = run_cli(config, "user", "import", tmp_path / "people.csv", "--jobs", "2")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2 and "busy" in result.stderr and "Traceback" not in result.stderr
    assert run_cli(config, "user", "list").stdout == ""
    assert run_cli(config, "user", "import", tmp_path / "people.csv").returncode == 0
    assert len(run_cli(config, "user", "list").stdout.splitlines()) == 120


def test_unreadable_files_are_one_line_and_create_nothing(tmp_path, run_cli):
    config = write_config(tmp_path / "c.toml")
    (tmp_path / "evil.xml").write_text(
        "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='example.org'>"
        "<user name='&b;' password='x'/></host></server-data>")
    (tmp_path / "cut.xml").write_text("<server-data xmlns='urn:xmpp:pie:0'><host jid='example.org'>"
                                      "<user name='a' password='x'/>")
    for name, message in (("evil.xml", "a DOCTYPE not allowed"), ("cut.xml", "not well-formed XML")):
        result = run_cli(config, "user", "import", tmp_path / name)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert run_cli(config, "user", "list").stdout == ""


PROSODY_CONFIG = """\
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
plugin_paths = {{}}
log = {{ {{ levels = {{ min = "error" }}, to = "console" }} }}
authentication = "internal_hashed"
storage = "internal"
VirtualHost "example.org"
"""


@pytest.mark.skipif(shutil.which("prosodyctl") is None, reason="prosody not installed (Debian package prosody)")
def test_prosody_hashed_accounts_made_by_prosodyctl_log_in(convergence_server, xmpp_client, tmp_path, run_cli):
    """Prosody's own files: ``prosodyctl register`` with internal_hashed storage (SCRAM-SHA-1 keys,
    its 10,000 iterations), and an internal_plain file (a password)."""
    prosody = tmp_path / "prosody"
    prosody.mkdir()
    (prosody / "prosody.cfg.lua").write_text(PROSODY_CONFIG.format(dir=prosody))
    for name, password in (("juliet", "balcony"), ("o.brien", 'pä"ss')):
        subprocess.run(["prosodyctl", "--config", str(prosody / "prosody.cfg.lua"), "register", name,
                        DOMAIN, password], check=True, capture_output=True, timeout=60)
    accounts_dir = prosody / "data" / "example%2eorg" / "accounts"
    (accounts_dir / "nurse.dat").write_text('return {\n\t["password"] = "herbs";\n};\n')
    server = convergence_server({})
    result = run_cli(server.process.config_path, "user", "import", accounts_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 created, 0 skipped (they exist), 0 refused" in result.stdout
    assert "2 created from SCRAM keys" in result.stdout and "2 of them with one SCRAM hash's keys only" in result.stdout
    assert xmpp_client(server, "juliet", "balcony", mechanism="SCRAM-SHA-1", presence=False)
    assert xmpp_client(server, "o.brien", 'pä"ss', mechanism="SCRAM-SHA-1", presence=False)
    assert xmpp_client(server, "nurse", "herbs", presence=False)
