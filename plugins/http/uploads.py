"""HTTP File Upload (XEP-0363 v1.1), the HTTP half: slots, ``PUT`` and ``GET`` of uploaded files.

Another plugin (the XMPP one, ``plugins/xmpp/upload.py``) asks for a slot through the HTTP plugin's
object, ``core.pm.get_plugin("http:server").uploads.slot(...)``, with its own limits (size, quota,
slot lifetime, file lifetime); neither plugin imports the other. A slot is one row of the
``uploads`` table (revision ``http_0002``): a random id (the file's name on disk and in the URL),
the owner, the sanitised file name, the exact size and content type promised, the SHA-256 of the
slot's PUT token, when the slot lapses and, once uploaded, when the file goes.

``PUT {public_url}/upload/<id>/<name>`` with ``Authorization: Bearer <token>`` (the header the
slot lists, XEP-0363 §4) stores the body under ``<data_dir>/uploads/<id>``; anybody holding the URL
can ``GET`` it (§5: the URL is the capability; it has 128 random bits). The checks, each with the
status XEP-0363 §5 suggests: missing or wrong token 403; lapsed (or unknown) slot 403; a slot
used already 409; no ``Content-Length`` 411; a body larger than promised 413, smaller 400; another
content type than the slot's 400. The file's path never comes from the client's file name.

Purging: ``Uploads.purge`` deletes lapsed slots and expired files (and files whose account was
deleted, its rows having gone with it); the HTTP server runs it every
``[http] upload_purge_interval`` seconds (``server.py``), in a cluster on one process at a time
(the holder of ``http.upload:purge``, ``core.cluster.owner``).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request, send_file
from sqlalchemy import (BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, delete,
                        func, or_, select, update)
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Base, utcnow

blueprint = Blueprint("uploads", __name__)

MAX_NAME = 100  # characters of a sanitised file name
SLOT_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): a slot's id and its file's name
CHUNK = 65536
#: A media type as RFC 9110 §8.3.1 writes it (type "/" subtype, tokens), parameters allowed.
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}(\s*;.{0,200})?")
#: Shown in the browser (``inline``); anything else is downloaded (``attachment``).
INLINE = re.compile(r"(image/(png|jpeg|gif|webp|avif)|audio/[\w.+-]+|video/[\w.+-]+|text/plain)")
#: Answers for browser clients (CORS): XEP-0363 §8 asks services to allow cross-origin PUT and GET.
CORS = MappingProxyType({"Access-Control-Allow-Origin": "*",
                         "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
                         "Access-Control-Allow-Headers": "Authorization, Content-Type",
                         "Access-Control-Max-Age": "86400"})


class Upload(Base):
    """One upload slot (XEP-0363 §4) and, once PUT, its file."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    slot_expires: Mapped[datetime] = mapped_column(DateTime, index=True)
    keep_seconds: Mapped[int] = mapped_column(Integer)  # 0: kept until deleted
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


@dataclass(frozen=True)
class Slot:
    """What the requester is told (XEP-0363 §4): where to PUT with which headers, where to GET."""
    put: str
    get: str
    headers: tuple[tuple[str, str], ...]


def sanitise(filename: str) -> str:
    """A file name safe in a URL path and a Content-Disposition: the last path component, letters,
    digits, ``.``, ``-`` and ``_`` kept (others become ``_``), no leading dot, at most ``MAX_NAME``
    characters (the extension kept); ``file`` when nothing is left. Linear in the input."""
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", filename))[-1]
    name = "".join(c if c.isalnum() or c in ".-_" else "_" for c in name).lstrip(".")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        name = name[:MAX_NAME - len(ext) - 1] + "." + ext if ext else name[:MAX_NAME]
    return name or "file"


def valid_media_type(value: str) -> bool:
    return MEDIA_TYPE.fullmatch(value) is not None


def same_media_type(a: str, b: str) -> bool:
    """Equal types, ignoring case and spaces around parameters (RFC 9110 §8.3.1)."""
    def norm(v):
        return ";".join(p.strip() for p in v.lower().split(";"))
    return norm(a) == norm(b)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PutRefused(Exception):
    """A refused PUT: ``status`` and a short reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Uploads:
    """The upload slots and files of one core: rows in ``uploads``, files in ``directory``."""

    def __init__(self, db: Database, directory: Path, public_url: str, now=utcnow):
        self.db = db
        self.directory = directory
        self.public_url = public_url.rstrip("/")
        self.now = now

    def url(self, slot_id: str, filename: str) -> str:
        return f"{self.public_url}/upload/{slot_id}/{quote(filename)}"

    def slot(self, account: str, filename: str, size: int, content_type: str | None, *,
             quota: int, slot_timeout: float, keep_seconds: int) -> Slot | None:
        """A new slot of ``account`` for ``size`` bytes, or None when the files it keeps plus its
        open slots plus ``size`` would be over ``quota`` bytes (0: no quota)."""
        now = self.now()
        token = secrets.token_urlsafe(32)
        row = Upload(id=secrets.token_hex(16), filename=sanitise(filename), size=size,
                     content_type=content_type, digest=_digest(token), created_at=now,
                     slot_expires=now + timedelta(seconds=slot_timeout), keep_seconds=keep_seconds)
        with self.db.write() as session:
            row.account_id = lookup(session, account)
            if quota:
                live = or_(Upload.uploaded_at.is_not(None), Upload.slot_expires > now)
                kept = or_(Upload.expires_at.is_(None), Upload.expires_at > now)
                used = session.scalar(select(func.coalesce(func.sum(Upload.size), 0))
                                      .where(Upload.account_id == row.account_id, live, kept))
                if used + size > quota:
                    return None
            session.add(row)
        url = self.url(row.id, row.filename)
        return Slot(url, url, (("Authorization", f"Bearer {token}"),))

    def _row(self, slot_id: str) -> Upload | None:
        if not SLOT_ID.fullmatch(slot_id):  # not one of ours: no query
            return None
        with self.db.read() as session:
            return session.get(Upload, slot_id)

    def _path(self, slot_id: str) -> Path:
        return self.directory / slot_id

    def put(self, slot_id: str, authorization: str | None, length: int | None,
            content_type: str | None, stream, allow=None) -> None:
        """Store the body of a PUT to slot ``slot_id``, or raise ``PutRefused``. Once the request
        passed every check, ``allow(length)`` is called before the body is read (the listener then
        gives a large body the time it needs)."""
        row = self._row(slot_id)
        if row is None:  # never made, or lapsed and purged: the same answer as a lapsed one
            raise PutRefused(403, "no such upload slot, or it has expired")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(token.strip()), row.digest):
            raise PutRefused(403, "this upload slot needs its token (Authorization: Bearer ...)")
        if row.uploaded_at is not None:
            raise PutRefused(409, "this upload slot was used already")
        if row.slot_expires <= self.now():
            raise PutRefused(403, "this upload slot has expired")
        if length is None:
            raise PutRefused(411, "Content-Length is required")
        if length > row.size:
            raise PutRefused(413, f"the slot is for {row.size} bytes")
        if length < row.size:
            raise PutRefused(400, f"the slot is for {row.size} bytes, not {length}")
        if row.content_type and not same_media_type(content_type or "", row.content_type):
            raise PutRefused(400, f"the slot is for content type {row.content_type}")
        stored_type = row.content_type or (content_type if content_type and valid_media_type(
            content_type) else "application/octet-stream")
        if allow is not None:
            allow(length)
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.directory / f"{slot_id}.{secrets.token_hex(4)}.part"
        try:
            received = 0
            with open(part, "wb") as file:
                while received < length:
                    try:
                        chunk = stream.read(min(CHUNK, length - received))
                    except TimeoutError:  # the listener's body deadline (HTTPHandler)
                        raise PutRefused(400, f"the body did not arrive in time ({received} of "
                                         f"{length} bytes)") from None
                    if not chunk:
                        break
                    file.write(chunk)
                    received += len(chunk)
            if received != length:
                raise PutRefused(400, f"the body ended after {received} of {length} bytes")
            now = self.now()
            expires = now + timedelta(seconds=row.keep_seconds) if row.keep_seconds else None
            with self.db.write() as session:  # single use, also against a concurrent PUT
                won = session.execute(
                    update(Upload).where(Upload.id == slot_id, Upload.uploaded_at.is_(None))
                    .values(uploaded_at=now, expires_at=expires, content_type=stored_type)).rowcount
            if not won:
                raise PutRefused(409, "this upload slot was used already")
            os.replace(part, self._path(slot_id))
        finally:
            part.unlink(missing_ok=True)

    def file(self, slot_id: str, filename: str) -> tuple[Path, Upload] | None:
        """The stored file at that URL and its row, or None (unknown, not uploaded, expired)."""
        row = self._row(slot_id)
        if row is None or row.uploaded_at is None or row.filename != filename:
            return None
        if row.expires_at is not None and row.expires_at <= self.now():
            return None
        path = self._path(slot_id)
        return (path, row) if path.is_file() else None

    def purge(self) -> int:
        """Delete lapsed slots and expired files (rows and files); how many rows went."""
        now = self.now()
        gone = or_(Upload.expires_at <= now,
                   (Upload.uploaded_at.is_(None)) & (Upload.slot_expires <= now))
        with self.db.write() as session:
            ids = list(session.scalars(select(Upload.id).where(gone)))
            if ids:
                session.execute(delete(Upload).where(Upload.id.in_(ids)))
        for slot_id in ids:
            self._path(slot_id).unlink(missing_ok=True)
        return len(ids) + self._orphans()

    def _orphans(self) -> int:
        """Delete files whose row is gone (their account was deleted: the rows went with it) and
        ``.part`` files of PUTs cut off over a day ago (a crash); how many."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        stale = time.time() - 86400
        files = {e.name: e for e in entries if SLOT_ID.fullmatch(e.name)}
        gone = [e for e in entries if e.name.endswith(".part") and e.stat().st_mtime < stale]
        names = list(files)
        for start in range(0, len(names), 500):
            batch = names[start:start + 500]
            with self.db.read() as session:
                known = set(session.scalars(select(Upload.id).where(Upload.id.in_(batch))))
            gone += [files[n] for n in batch if n not in known]
        for entry in gone:
            Path(entry.path).unlink(missing_ok=True)
        return len(gone)


def _uploads() -> Uploads:
    return current_app.extensions["convergence"].pm.get_plugin("http:server").uploads


def _answer(status: int, text: str) -> Response:
    return Response(text + "\n", status, {"Content-Type": "text/plain; charset=utf-8", **CORS})


@blueprint.route("/upload/<slot_id>/<filename>", methods=["OPTIONS"])
def preflight(slot_id, filename):
    return Response(status=204, headers=dict(CORS))


@blueprint.put("/upload/<slot_id>/<filename>")
def put(slot_id, filename):
    settings = current_app.extensions["convergence"].config["http"]
    read_for = request.environ.get("convergence.read_for")

    def allow(length):  # body_timeout plus the time at upload_min_rate (slowloris: token first)
        if read_for is not None:
            read_for(settings["body_timeout"] + length / settings["upload_min_rate"])
    try:
        _uploads().put(slot_id, request.headers.get("Authorization"), request.content_length,
                       request.headers.get("Content-Type"), request.stream, allow)
    except PutRefused as exc:
        return _answer(exc.status, str(exc))
    return _answer(201, "stored")


@blueprint.route("/upload/<slot_id>/<filename>", methods=["GET", "HEAD"])
def get(slot_id, filename):
    found = _uploads().file(slot_id, filename)
    if found is None:
        return _answer(404, "no such file (or it has expired)")
    path, row = found
    inline = INLINE.fullmatch(row.content_type.split(";")[0].strip().lower()) is not None
    response = send_file(path, mimetype=row.content_type, as_attachment=not inline,
                         download_name=row.filename, conditional=True, etag=slot_id, max_age=3600)
    response.headers.update(CORS)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
