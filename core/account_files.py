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
    """``"xep0227"`` for a file that starts (after a byte-order mark and blanks) with ``<``,
    else ``"csv"``."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "xep0227" if head.startswith(b"<") else "csv"


def read(path: Path, kind: str, ignored: Ignored | None = None) -> Iterator[Entry | Refusal]:
    """The records of ``path`` read as ``kind`` (``csv`` or ``xep0227``); FileError for a file
    that cannot be read at all."""
    try:
        if kind == "csv":
            yield from read_csv(path)
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
    if not count.isdigit() or count.startswith("0") or int(count) > MAX_ITERATIONS:
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
