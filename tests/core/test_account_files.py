"""The account file readers (``convergence.account_files``): CSV, XEP-0227 as ejabberd writes it
(XInclude of one file per host, the pre-1.0 namespace), SCRAM credentials (§5.3), the refusals,
the safety bounds, and a seeded fuzz: whatever the bytes, a FileError or records, nothing else."""
import base64
import random

import pytest

from convergence import account_files
from convergence.account_files import Entry, FileError, Ignored, Refusal, read
from convergence.credentials import derive
from fuzz_kit import mutate

#: What XEP-0227's grammar hinges on, inserted by the fuzz.
TOKENS = (b"<", b">", b"&", b"'", b"<x>", b"</user>", b"<!DOCTYPE a>", b"<user name='z'>", b"\x00", b"&amp;")


def records(path, kind=None):
    return list(read(path, kind or account_files.detect(path)))


def test_csv_header_quoting_bom_and_refusals(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes('\ufeffname,password\nalice,"pw, with comma"\n\nbob,pw\ncarol\n"dave",x,y\n'.encode())
    assert account_files.detect(path) == "csv"
    assert records(path) == [Entry("line 2", "alice", password="pw, with comma"),
                             Entry("line 4", "bob", password="pw"),
                             Refusal("line 5", "carol", "expected 2 fields (name,password), got 1"),
                             Refusal("line 6", "dave", "expected 2 fields (name,password), got 3")]


def test_csv_not_utf8_is_a_file_error(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"alice,\xff\xfe\n")
    with pytest.raises(FileError, match="not UTF-8"):
        records(tmp_path / "a.csv")


def scram(mechanism, creds, keys):
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return (f"<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{mechanism}'>"
            f"<iter-count>{creds.iterations}</iter-count><salt>{b64(creds.salt)}</salt>"
            f"<server-key>{b64(keys.server_key)}</server-key><stored-key>{b64(keys.stored_key)}</stored-key>"
            "</scram-credentials>")


def test_ejabberd_export_main_file_includes_host_files(tmp_path):
    """ejabberd's export_piefxis: a main file of xi:include, each host file rooted at <host>, the
    old namespace, SCRAM-SHA-1 keys only."""
    creds = derive("juliet", "example.org", "balcony")
    (tmp_path / "main.xml").write_text(
        "<?xml version='1.0' encoding='UTF-8'?><server-data "
        "xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns' xmlns:xi='http://www.w3.org/2001/XInclude'>"
        "<xi:include href='example.org.xml'/></server-data>")
    (tmp_path / "example.org.xml").write_text(
        "<?xml version='1.0' encoding='UTF-8'?><host xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns'"
        " jid='example.org'>\n<user name='juliet'>" + scram("SCRAM-SHA-1", creds, creds.sha1)
        + "<vCard xmlns='vcard-temp'/></user>\n<user name='romeo' password='pw'/></host>")
    ignored = Ignored()
    found = list(read(tmp_path / "main.xml", "xep0227", ignored))
    assert [(r.where, r.name, r.password, r.host) for r in found] == [
        ("example.org.xml line 2", "juliet", None, "example.org"),
        ("example.org.xml line 3", "romeo", "pw", "example.org")]
    [sha1] = found[0].scram
    assert (sha1.hash_name, sha1.salt, sha1.iterations, sha1.keys) == ("sha1", creds.salt, 4096, creds.sha1)
    assert ignored.counts == {"{vcard-temp}vCard": 1}
    made, both = account_files.credentials_from_scram(found[0].scram, "example.org")
    assert not both and made.sha1 == creds.sha1 and made.sha256.stored_key == b"" and made.ha1_md5 == ""


def test_both_hashes_with_one_salt_are_kept_and_written_back(tmp_path):
    creds = derive("juliet", "example.org", "balcony")
    text = (account_files.xep0227_header("example.org") + account_files.xep0227_user("juliet", creds)
            + account_files.XEP0227_FOOTER)
    (tmp_path / "a.xml").write_text(text)
    [entry] = records(tmp_path / "a.xml")
    made, both = account_files.credentials_from_scram(entry.scram, "example.org")
    assert both and (made.salt, made.iterations, made.sha1, made.sha256) == \
        (creds.salt, creds.iterations, creds.sha1, creds.sha256)
    assert account_files.xep0227_user("juliet", made) == account_files.xep0227_user("juliet", creds)


@pytest.mark.parametrize("user, reason", [
    ("<user/>", "<user/> has no name"),
    ("<user name='a'/>", "neither a password nor SCRAM credentials"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-512'/></user>",
     "SCRAM-SHA-512 is not one this server uses"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>4096</iter-count></scram-credentials></user>", "missing salt, server-key, stored-key"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>0400</iter-count><salt>AA==</salt><server-key>AA==</server-key><stored-key>AA==</stored-key>"
     "</scram-credentials></user>", "iter-count must be a positive integer"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>4096</iter-count><salt>!!</salt><server-key>AA==</server-key><stored-key>AA==</stored-key>"
     "</scram-credentials></user>", "bad base64"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>4096</iter-count><salt>AA==</salt><server-key>AA==</server-key><stored-key>AA==</stored-key>"
     "</scram-credentials></user>", "must be 20 bytes"),
])
def test_unusable_users_are_refused_with_the_reason(tmp_path, user, reason):
    (tmp_path / "a.xml").write_text(f"<server-data xmlns='urn:xmpp:pie:0'><host jid='x.org'>{user}"
                                    "</host></server-data>")
    [refusal] = records(tmp_path / "a.xml")
    assert isinstance(refusal, Refusal) and reason in refusal.reason


@pytest.mark.parametrize("text, message", [
    ("<!DOCTYPE d [<!ENTITY a 'x'>]><server-data xmlns='urn:xmpp:pie:0'/>", "a DOCTYPE not allowed"),
    ("<!DOCTYPE d SYSTEM 'file:///etc/passwd'><server-data xmlns='urn:xmpp:pie:0'/>", "a DOCTYPE not allowed"),
    ("<server-data xmlns='urn:xmpp:pie:0'><host jid='x'><user name='&ext;'/></host></server-data>",
     "not well-formed"),
    ("<accounts/>", "not a XEP-0227 file"),
    ("<server-data xmlns='urn:xmpp:pie:0'>" + "<x>" * 40 + "</x>" * 40 + "</server-data>", "nested deeper"),
    ("<server-data xmlns='urn:xmpp:pie:0'><host jid='x'><user name='a'><scram-credentials "
     "xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><salt>" + "A" * 5000 + "</salt>"
     "</scram-credentials></user></host></server-data>", "longer than 4096"),
    ("<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
     "<xi:include href='/etc/passwd'/></server-data>", "must name a file in the same folder"),
    ("<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
     "<xi:include href='http://example.org/x.xml'/></server-data>", "must name a file in the same folder"),
    ("<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
     "<xi:include href='missing.xml'/></server-data>", "cannot read"),
])
def test_unsafe_or_broken_files_are_file_errors(tmp_path, text, message):
    (tmp_path / "a.xml").write_text(text)
    with pytest.raises(FileError, match=message):
        records(tmp_path / "a.xml", "xep0227")


def test_includes_are_one_level_deep(tmp_path):
    include = ("<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
               "<xi:include href='{}'/></server-data>")
    (tmp_path / "a.xml").write_text(include.format("b.xml"))
    (tmp_path / "b.xml").write_text(include.format("a.xml"))  # a loop, too
    with pytest.raises(FileError, match="one level deep"):
        records(tmp_path / "a.xml")


def test_fuzzed_files_give_records_or_a_file_error(tmp_path):
    """Seeded and bounded: mutations of a valid export never raise anything but FileError."""
    creds = derive("juliet", "example.org", "balcony", iterations=1)
    valid = (account_files.xep0227_header("example.org") + account_files.xep0227_user("juliet", creds)
             + "<user name='romeo' password='pw'/>" + account_files.XEP0227_FOOTER).encode()
    rng = random.Random(227)
    path = tmp_path / "f.xml"
    outcomes = {"records": 0, "error": 0}
    for _ in range(400):
        path.write_bytes(mutate(valid, rng, TOKENS))
        try:
            found = records(path, "xep0227")
        except FileError:
            outcomes["error"] += 1
        else:
            assert all(isinstance(r, (Entry, Refusal)) for r in found)
            outcomes["records"] += 1
    assert outcomes["records"] and outcomes["error"]


def test_prosody_account_files(tmp_path):
    """Prosody's datamanager layout and Lua serialization: %-encoded names, hex keys, a string
    salt, decimal escapes and comments; a bad file refuses its account only."""
    creds = derive("o.brien", "example.org", "pw", salt=b"2c5d-uuid", iterations=10000)
    folder = tmp_path / "example%2eorg" / "accounts"
    folder.mkdir(parents=True)
    (folder / "o%2ebrien.dat").write_text(
        "return {\n\t[\"salt\"] = \"2c5d-uuid\";\n\t[\"stored_key\"] = \"%s\";\n"
        "\t[\"server_key\"] = \"%s\"; -- SHA-1\n\t[\"iteration_count\"] = 10000;\n};\n"
        % (creds.sha1.stored_key.hex(), creds.sha1.server_key.hex()))
    (folder / "plain.dat").write_bytes(b'return { ["password"] = "p\\195\\164ss\\"\\n"; };\n')
    (folder / "broken.dat").write_text("return { os.execute('x') }")
    (folder / "short.dat").write_text('return { ["stored_key"] = "00"; ["server_key"] = "00"; '
                                      '["salt"] = "s"; ["iteration_count"] = 1; };')
    assert account_files.detect(tmp_path / "example%2eorg") == "prosody"
    found = records(tmp_path / "example%2eorg")  # the host folder: its accounts folder is read
    assert [r.name for r in found] == ["broken", "o.brien", "plain", "short"]
    broken, obrien, plain, short = found
    assert isinstance(broken, Refusal) and "not a Prosody account file" in broken.reason
    assert obrien.host == "example.org" and obrien.password is None
    [keys] = obrien.scram
    assert (keys.hash_name, keys.salt, keys.iterations, keys.keys) == ("sha1", b"2c5d-uuid", 10000, creds.sha1)
    assert plain.password == 'päss"\n'
    assert isinstance(short, Refusal) and "20 (SHA-1) or 32 (SHA-256) bytes" in short.reason


def test_prosody_folder_must_be_an_accounts_folder(tmp_path):
    with pytest.raises(FileError, match="not a Prosody accounts folder"):
        records(tmp_path, "prosody")


def test_fuzzed_prosody_files_refuse_their_account_only(tmp_path):
    valid = (b'return {\n\t["salt"] = "99014dde";\n\t["stored_key"] = "' + b"ab" * 20
             + b'";\n\t["server_key"] = "' + b"cd" * 20 + b'";\n\t["iteration_count"] = 10000;\n};\n')
    folder = tmp_path / "accounts"
    folder.mkdir()
    rng = random.Random(12)
    for _ in range(400):
        (folder / "a.dat").write_bytes(mutate(valid, rng, (b'"', b"\\", b"\\9", b"[", b"]", b"{", b"}", b"=",
                                                           b";", b"--", b"\n", b"\\x4", b"\\300")))
        [record] = records(folder, "prosody")
        assert isinstance(record, (Entry, Refusal))


def test_prosody_export_reads_back_with_any_salt_bytes(tmp_path):
    creds = derive("o.brien", "example.org", "pw", salt=bytes(range(256))[::7] + b'"\\\x00\xff')
    folder = tmp_path / account_files.prosody_encode("example.org") / "accounts"
    folder.mkdir(parents=True)
    (folder / f"{account_files.prosody_encode('o.brien')}.dat").write_text(account_files.prosody_account(creds))
    [entry] = records(tmp_path / "example%2eorg" / "accounts")
    assert (entry.name, entry.host) == ("o.brien", "example.org")
    [keys] = entry.scram
    assert (keys.salt, keys.iterations, keys.keys) == (creds.salt, creds.iterations, creds.sha1)
