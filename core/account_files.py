"""Account files other servers write and read: what ``convergence user import|export`` parse and
write. Reading yields one :class:`Entry` per account, or a :class:`Refusal` for a record that
cannot be one; nothing here touches the database.

- **CSV** ``name,password`` (RFC 4180; an optional first line ``name,password`` is a header),
  UTF-8, a byte-order mark allowed.
- **XEP-0227** (Portable Import/Export Format, v1.1): ``<server-data xmlns='urn:xmpp:pie:0'>``
  (or the pre-1.0 namespace ``http://www.xmpp.org/extensions/xep-0227.html#ns`` that ejabberd
  still reads) with ``<host jid=…>`` and ``<user name=… [password=…]>``; §5.3 SCRAM credentials
  ``<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1|SCRAM-SHA-256'>`` with
  ``iter-count``, ``salt``, ``server-key`` and ``stored-key`` (base64). ``ejabberdctl
  export_piefxis`` writes a main file that includes one file per host (§4 XInclude): an
  ``<xi:include href=…/>`` naming a file in the same folder is read (one level deep); any other
  href is refused. Other data under ``<user/>`` (roster, vCard, offline messages…) is counted
  and not imported (§4: "SHOULD notify the operator").

- **Prosody** ``internal_hashed``/``internal_plain`` storage: the folder
  ``<data_path>/<host>/accounts/`` (or the host folder above it), one Lua file ``<user>.dat`` an
  account (names %-encoded, as Prosody's datamanager writes them), holding ``stored_key`` and
  ``server_key`` (hex), ``salt`` (the bytes of a string) and ``iteration_count`` — SCRAM-SHA-1, or
  SCRAM-SHA-256 under ``password_hash = "SHA-256"`` (told apart by the key length) — or a plaintext
  ``password``. Only Lua's data syntax is read (a table of strings, numbers and booleans), by a
  small tokenizer: nothing is evaluated.

Parsing is safe for files from elsewhere: expat with any DOCTYPE refused as it starts (so no
entity is ever declared, no external entity or DTD read), the file read in 64 KiB pieces, element
depth and the text of one element bounded.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterator
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from .credentials import Credentials, ScramKeys

PIE_NS = "urn:xmpp:pie:0"
PIE_NS_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns"
SCRAM_NS = "urn:xmpp:pie:0#scram"
XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
#: SCRAM mechanism → (hash, key length) of the keys this server keeps (RFC 5802, RFC 7677).
SCRAM_HASHES = (("SCRAM-SHA-1", "sha1", 20), ("SCRAM-SHA-256", "sha256", 32))
MAX_DEPTH = 32  # elements nested in a XEP-0227 file
MAX_TEXT = 4096  # characters of one credential element's text
MAX_SALT = 64  # bytes (the accounts table's column)
MAX_ITERATIONS = 10_000_000
CHUNK = 65536


class FileError(Exception):
    """The file cannot be read as a whole (not well-formed, wrong root, unreadable); one line."""


@dataclass(frozen=True)
class ScramSet:
    """One ``<scram-credentials/>``: keys of one hash with their salt and iteration count."""

    hash_name: str
    salt: bytes
    iterations: int
    keys: ScramKeys


@dataclass(frozen=True)
class Entry:
    """An account to create: ``where`` is ``line N`` of the file; a plaintext ``password`` or
    ``scram`` sets (by hash name), never both used: the password wins."""

    where: str
    name: str
    password: str | None = None
    scram: tuple[ScramSet, ...] = ()
    host: str | None = None  # XEP-0227 <host jid=…>


@dataclass(frozen=True)
class Refusal:
    where: str
    name: str
    reason: str


@dataclass
class Ignored:
    """What a XEP-0227 file held that is not imported: element name → how many."""

    counts: dict[str, int] = field(default_factory=dict)


def detect(path: Path) -> str:
    """``"prosody"`` for a folder, ``"xep0227"`` for a file that starts (after a byte-order mark
    and blanks) with ``<``, else ``"csv"``."""
    if path.is_dir():
        return "prosody"
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "xep0227" if head.startswith(b"<") else "csv"


def read(path: Path, kind: str, ignored: Ignored | None = None) -> Iterator[Entry | Refusal]:
    """The records of ``path`` read as ``kind`` (``csv`` or ``xep0227``); FileError for a file
    that cannot be read at all."""
    try:
        if kind == "csv":
            yield from read_csv(path)
        elif kind == "prosody":
            yield from read_prosody(path)
        else:
            yield from read_xep0227(path, ignored or Ignored())
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc


# ---- CSV ---------------------------------------------------------------------------------------

def read_csv(path: Path) -> Iterator[Entry | Refusal]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            for row in reader:
                where = f"line {reader.line_num}"
                if not row or row == [""]:
                    continue
                if reader.line_num == 1 and [c.strip().lower() for c in row] == ["name", "password"]:
                    continue
                if len(row) != 2:
                    yield Refusal(where, row[0], f"expected 2 fields (name,password), got {len(row)}")
                    continue
                yield Entry(where, row[0].strip(), password=row[1])
        except csv.Error as exc:
            raise FileError(f"{path}: line {reader.line_num}: {exc}") from exc


# ---- XEP-0227 ----------------------------------------------------------------------------------

def _refuse(what: str):
    def handler(*_):
        raise FileError(f"{what} not allowed in an account file")
    return handler


class _Pie:
    """Streaming reader of one XEP-0227 file; collects finished records in ``out``."""

    def __init__(self, path: Path, ignored: Ignored, nested: bool):
        self.path, self.ignored, self.nested = path, ignored, nested
        self.out: list[Entry | Refusal] = []
        self.includes: list[str] = []
        self.stack: list[str] = []
        self.host: str | None = None
        self.user: dict | None = None  # the <user/> being read
        self.scram: dict | None = None  # the <scram-credentials/> being read
        self.text: list[str] | None = None
        parser = expat.ParserCreate("utf-8", "}")
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE")
        parser.EntityDeclHandler = _refuse("an entity declaration")
        parser.ExternalEntityRefHandler = _refuse("an external entity")
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.data
        self.parser = parser

    def where(self) -> str:
        name = f"{self.path.name} " if self.nested else ""
        return f"{name}line {self.parser.CurrentLineNumber}"

    def start(self, tag: str, attrs: dict) -> None:
        depth = len(self.stack)
        if depth >= MAX_DEPTH:
            raise FileError(f"elements nested deeper than {MAX_DEPTH}")
        self.stack.append(tag)
        ns, _, local = tag.rpartition("}")
        if depth == 0:
            if local == "server-data" and ns in (PIE_NS, PIE_NS_OLD):
                return
            if self.nested and local == "host" and ns in (PIE_NS, PIE_NS_OLD):
                self.host = attrs.get("jid", "")
                return
            raise FileError(f"not a XEP-0227 file: the root is <{local}> in {ns or 'no namespace'!r}")
        if ns == XINCLUDE_NS and local == "include" and self.user is None:
            self.includes.append(attrs.get("href", ""))
        elif self.user is None and local == "host" and ns in (PIE_NS, PIE_NS_OLD):
            self.host = attrs.get("jid", "")
        elif self.user is None and local == "user" and ns in (PIE_NS, PIE_NS_OLD):
            self.user = {"where": self.where(), "name": attrs.get("name", ""),
                         "password": attrs.get("password"), "scram": [], "errors": [], "depth": depth}
        elif self.user is not None and depth == self.user["depth"] + 1:
            if ns == SCRAM_NS and local == "scram-credentials":
                self.scram = {"mechanism": attrs.get("mechanism", "")}
            else:
                key = f"{{{ns}}}{local}" if ns else local
                self.ignored.counts[key] = self.ignored.counts.get(key, 0) + 1
        elif self.scram is not None and depth == self.user["depth"] + 2:
            self.text = []

    def data(self, text: str) -> None:
        if self.text is not None:
            self.text.append(text)
            if sum(map(len, self.text)) > MAX_TEXT:
                raise FileError(f"{self.where()}: an element's text is longer than {MAX_TEXT} characters")

    def end(self, tag: str) -> None:
        self.stack.pop()
        depth = len(self.stack)
        user = self.user
        if user is None:
            if tag.endswith("}host"):
                self.host = None if not self.nested else self.host
            return
        if depth == user["depth"]:
            self.out.append(self._finish(user))
            self.user = None
        elif self.scram is not None and depth == user["depth"] + 1:
            try:
                user["scram"].append(_scram_set(self.scram))
            except ValueError as exc:
                user["errors"].append(str(exc))
            self.scram = None
        elif self.text is not None and depth == user["depth"] + 2:
            self.scram[tag.rpartition("}")[2]] = "".join(self.text).strip()
            self.text = None

    def _finish(self, user: dict) -> Entry | Refusal:
        where, name = user["where"], user["name"]
        if not name:
            return Refusal(where, name, "<user/> has no name")
        if user["errors"]:
            return Refusal(where, name, "; ".join(user["errors"]))
        if user["password"] is None and not user["scram"]:
            return Refusal(where, name, "neither a password nor SCRAM credentials")
        return Entry(where, name, password=user["password"], scram=tuple(user["scram"]), host=self.host)

    def feed(self, f) -> None:
        try:
            while chunk := f.read(CHUNK):
                self.parser.Parse(chunk, False)
            self.parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise FileError(f"{self.path}: not well-formed XML: {exc}") from exc
        except FileError as exc:
            if str(exc).startswith(str(self.path)):
                raise
            raise FileError(f"{self.path}: {exc}") from exc


def _scram_set(found: dict) -> ScramSet:
    """XEP-0227 §5.3 credentials → a ScramSet (ValueError naming what is wrong)."""
    mechanism = found["mechanism"]
    known = {m: (h, n) for m, h, n in SCRAM_HASHES}
    if mechanism not in known:
        raise ValueError(f"{mechanism or 'a SCRAM mechanism'} is not one this server uses "
                         f"({', '.join(known)})")
    hash_name, size = known[mechanism]
    missing = [k for k in ("iter-count", "salt", "server-key", "stored-key") if k not in found]
    if missing:
        raise ValueError(f"{mechanism}: missing {', '.join(missing)}")
    count = found["iter-count"]
    if not count or not set(count) <= _DIGITS or count.startswith("0") or int(count) > MAX_ITERATIONS:
        raise ValueError(f"{mechanism}: iter-count must be a positive integer up to {MAX_ITERATIONS}")
    try:
        salt, server, stored = (base64.b64decode(found[k], validate=True)
                                for k in ("salt", "server-key", "stored-key"))
    except binascii.Error as exc:
        raise ValueError(f"{mechanism}: bad base64 ({exc})") from exc
    if not salt or len(salt) > MAX_SALT:
        raise ValueError(f"{mechanism}: the salt must be 1 to {MAX_SALT} bytes")
    if len(server) != size or len(stored) != size:
        raise ValueError(f"{mechanism}: server-key and stored-key must be {size} bytes")
    return ScramSet(hash_name, salt, int(count), ScramKeys(stored, server))


def read_xep0227(path: Path, ignored: Ignored, nested: bool = False) -> Iterator[Entry | Refusal]:
    reader = _Pie(path, ignored, nested)
    with open(path, "rb") as f:
        # The whole file is parsed before any record is used: a file that is not well-formed
        # imports nothing.
        reader.feed(f)
    yield from reader.out
    for href in reader.includes:
        if nested:
            raise FileError(f"{path}: XInclude is read one level deep only (found {href!r})")
        if not href or "/" in href or "\\" in href or href in (".", "..") or ":" in href:
            raise FileError(f"{path}: XInclude href {href!r} must name a file in the same folder")
        yield from read_xep0227(path.parent / href, ignored, nested=True)


def credentials_from_scram(sets: tuple[ScramSet, ...], realm: str) -> tuple[Credentials, bool]:
    """Stored keys as :class:`Credentials` without digest HA1, and whether both hashes' keys are
    there. Both are kept when they share salt and iteration count (what Convergence exports);
    otherwise the SHA-256 set is kept (PLAIN and HTTP Basic verify against it) and the SHA-1 keys
    are left empty (a SCRAM-SHA-1 login then fails cleanly)."""
    by_hash = {s.hash_name: s for s in sets}
    main = by_hash.get("sha256") or by_hash["sha1"]
    empty = ScramKeys(b"", b"")
    pick = {h: s.keys if (s.salt, s.iterations) == (main.salt, main.iterations) else empty
            for h, s in by_hash.items()}
    sha1, sha256 = pick.get("sha1", empty), pick.get("sha256", empty)
    return (Credentials(main.salt, main.iterations, sha1, sha256, realm, "", ""),
            bool(sha1.stored_key and sha256.stored_key))


# ---- Prosody's account store --------------------------------------------------------------------

MAX_DAT = 65536  # bytes of one account file
_DIGITS = frozenset("0123456789")
_LUA_ESCAPES = MappingProxyType({"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                                 "v": "\v", "\\": "\\", '"': '"', "'": "'", "\n": "\n"})


def prosody_decode(name: str) -> str:
    """Prosody's datamanager file name → the name (every ``%xx`` is a byte of UTF-8)."""
    out, i = bytearray(), 0
    while i < len(name):
        if name[i] == "%" and i + 2 < len(name) and all(c in "0123456789abcdefABCDEF" for c in name[i + 1:i + 3]):
            out.append(int(name[i + 1:i + 3], 16))
            i += 3
        else:
            out += name[i].encode()
            i += 1
    return out.decode()


class _Lua:
    """Reads ``return { key = value; … }`` with string (as bytes), number and boolean values
    (Prosody's serialization of a flat table); ValueError otherwise. One pass, no backtracking.
    ``text`` is the file's bytes as Latin-1 (one character a byte)."""

    def __init__(self, text: str):
        self.text, self.at = text, 0

    def skip(self) -> None:
        text = self.text
        while self.at < len(text):
            if text[self.at] in " \t\r\n":
                self.at += 1
            elif text.startswith("--", self.at):
                end = text.find("\n", self.at)
                self.at = len(text) if end < 0 else end + 1
            else:
                return

    def expect(self, token: str) -> None:
        self.skip()
        if not self.text.startswith(token, self.at):
            raise ValueError(f"expected {token!r} at character {self.at}")
        self.at += len(token)

    def peek(self) -> str:
        self.skip()
        return self.text[self.at:self.at + 1]

    def word(self) -> str:
        self.skip()
        start = self.at
        while self.at < len(self.text) and (self.text[self.at].isalnum() or self.text[self.at] in "_.-+"):
            self.at += 1
        if start == self.at:
            raise ValueError(f"unexpected {self.text[self.at:self.at + 1]!r} at character {self.at}")
        return self.text[start:self.at]

    def string(self) -> str:
        quote = self.text[self.at]
        self.at += 1
        out = []
        while True:
            if self.at >= len(self.text):
                raise ValueError("unterminated string")
            ch = self.text[self.at]
            self.at += 1
            if ch == quote:
                return "".join(out)
            if ch == "\n":
                raise ValueError("line break in a string")
            if ch != "\\":
                out.append(ch)
                continue
            esc = self.text[self.at:self.at + 1]
            if esc and esc in _DIGITS:
                digits = esc
                while len(digits) < 3 and self.text[self.at + len(digits):self.at + len(digits) + 1] in _DIGITS:
                    digits += self.text[self.at + len(digits)]
                if int(digits) > 255:
                    raise ValueError("bad decimal escape")
                out.append(chr(int(digits)))  # one byte, like every character here
                self.at += len(digits)
            elif esc == "x" and all(c in "0123456789abcdefABCDEF" for c in self.text[self.at + 1:self.at + 3]):
                out.append(chr(int(self.text[self.at + 1:self.at + 3], 16)))
                self.at += 3
            elif esc in _LUA_ESCAPES:
                out.append(_LUA_ESCAPES[esc])
                self.at += 1
            else:
                raise ValueError(f"bad escape \\{esc}")

    def value(self):
        first = self.peek()
        if first in ("\"", "'"):
            return self.string().encode("latin-1")  # bytes: a salt is any bytes, text is UTF-8
        word = self.word()
        if word in ("true", "false"):
            return word == "true"
        try:
            return int(word)
        except ValueError:
            return float(word)

    def table(self) -> dict:
        self.expect("return")
        self.expect("{")
        found = {}
        while self.peek() != "}":
            if self.peek() == "[":
                self.expect("[")
                if self.peek() not in ("\"", "'"):
                    raise ValueError("only string keys are read")
                key = self.value().decode("latin-1")
                self.expect("]")
            else:
                key = self.word()
            self.expect("=")
            found[key] = self.value()
            if self.peek() in (";", ","):
                self.at += 1
        self.expect("}")
        if self.peek() == ";":
            self.at += 1
        if self.peek():
            raise ValueError("text after the table")
        return found


def _prosody_entry(where: str, name: str, data: dict, host: str | None) -> Entry | Refusal:
    password = data.get("password")
    if isinstance(password, bytes) and password:
        try:
            return Entry(where, name, password=password.decode(), host=host)
        except UnicodeDecodeError:
            return Refusal(where, name, "the password is not UTF-8")
    keys = [data.get(k) for k in ("stored_key", "server_key", "salt", "iteration_count")]
    if not all(keys):
        return Refusal(where, name, "neither a password nor SCRAM keys (stored_key, server_key, salt, iteration_count)")
    stored, server, salt, count = keys
    try:
        stored, server = bytes.fromhex(stored.decode("ascii")), bytes.fromhex(server.decode("ascii"))
    except (AttributeError, ValueError):
        return Refusal(where, name, "stored_key and server_key must be hex")
    by_size = {size: (m, h) for m, h, size in SCRAM_HASHES}
    if len(stored) not in by_size or len(server) != len(stored):
        return Refusal(where, name, "keys of 20 (SHA-1) or 32 (SHA-256) bytes expected")
    if not isinstance(count, int) or not 0 < count <= MAX_ITERATIONS:
        return Refusal(where, name, f"iteration_count must be a positive integer up to {MAX_ITERATIONS}")
    salt = salt if isinstance(salt, bytes) else b""
    if not salt or len(salt) > MAX_SALT:
        return Refusal(where, name, f"the salt must be 1 to {MAX_SALT} bytes")
    hash_name = by_size[len(stored)][1]
    return Entry(where, name, scram=(ScramSet(hash_name, salt, count, ScramKeys(stored, server)),), host=host)


def prosody_encode(name: str) -> str:
    """A name as Prosody's datamanager names its file: every byte but ASCII letters and digits
    as ``%xx``."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}" for b in name.encode())


def _lua_string(data: bytes) -> str:
    """A Lua string literal of ``data``: printable ASCII as it is, any other byte ``\\ddd``."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in data) + '"'


def prosody_account(creds: Credentials) -> str | None:
    """The ``internal_hashed`` file of an account with SCRAM-SHA-1 keys (Prosody's default
    ``password_hash``), or None without them."""
    if not creds.sha1.stored_key:
        return None
    return (f'return {{\n\t["iteration_count"] = {creds.iterations};\n\t["salt"] = {_lua_string(creds.salt)};\n'
            f'\t["server_key"] = "{creds.sha1.server_key.hex()}";\n'
            f'\t["stored_key"] = "{creds.sha1.stored_key.hex()}";\n}};\n')


def read_prosody(folder: Path) -> Iterator[Entry | Refusal]:
    """The accounts of a Prosody host: ``folder`` is its ``accounts`` folder or the host's."""
    if (folder / "accounts").is_dir():
        folder = folder / "accounts"
    if folder.name != "accounts":
        raise FileError(f"{folder}: not a Prosody accounts folder (<data_path>/<host>/accounts)")
    host = prosody_decode(folder.parent.name) if folder.parent.name else None
    for path in sorted(folder.glob("*.dat")):
        where, name = path.name, prosody_decode(path.name[:-4])
        data = path.read_bytes()
        if len(data) > MAX_DAT:
            yield Refusal(where, name, f"file larger than {MAX_DAT} bytes")
            continue
        try:
            table = _Lua(data.decode("latin-1")).table()
        except (ValueError, UnicodeDecodeError) as exc:
            yield Refusal(where, name, f"not a Prosody account file: {exc}")
            continue
        yield _prosody_entry(where, name, table, host)


# ---- writing XEP-0227 --------------------------------------------------------------------------

def xep0227_header(domain: str) -> str:
    return (f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{PIE_NS}'>\n"
            f"  <host jid={quoteattr(domain)}>\n")


XEP0227_FOOTER = "  </host>\n</server-data>\n"


def xep0227_user(name: str, creds: Credentials) -> str:
    """One ``<user/>`` with a ``<scram-credentials/>`` per hash whose keys are stored (§5.3)."""
    out = io.StringIO()
    out.write(f"    <user name={quoteattr(name)}>\n")
    for mechanism, hash_name, _ in SCRAM_HASHES:
        keys = creds.sha1 if hash_name == "sha1" else creds.sha256
        if not keys.stored_key:
            continue
        b64 = lambda b: escape(base64.b64encode(b).decode())  # noqa: E731
        out.write(f"      <scram-credentials xmlns='{SCRAM_NS}' mechanism='{mechanism}'>"
                  f"<iter-count>{creds.iterations}</iter-count><salt>{b64(creds.salt)}</salt>"
                  f"<server-key>{b64(keys.server_key)}</server-key>"
                  f"<stored-key>{b64(keys.stored_key)}</stored-key></scram-credentials>\n")
    out.write("    </user>\n")
    return out.getvalue()
