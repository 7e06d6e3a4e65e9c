"""Accounts in bulk: ``convergence user import FILE`` and ``convergence user export``.

Import, in order: read the whole file (:mod:`convergence.account_files`: CSV ``name,password`` or
XEP-0227), refuse what cannot be an account (bad name, another host, a name listed twice, an
unusable password or SCRAM set: one reason per record), skip the names that exist, derive the
secrets of every plaintext password over the CPU cores (PBKDF2 for SCRAM-SHA-1 and -SHA-256 and
the digest HA1, :func:`convergence.credentials.derive`, in a ``ProcessPoolExecutor``), then create
every new account in **one transaction** — all of them, or none when anything fails, so an
interrupted or failed import leaves no account behind — and announce each like ``user add``
(``on_account``, the control path; on PostgreSQL the NOTIFYs go with the accounts' commit). Accounts given as SCRAM keys (no plaintext) get no digest
HA1: they log in over SASL SCRAM (and PLAIN/HTTP Basic when SHA-256 keys came), and digest
(SIP) refuses them until a password is set.

Export writes XEP-0227 with each account's stored SCRAM keys (§5.3), or Prosody's account store
(``internal_hashed``: the SCRAM-SHA-1 keys), never a password.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, TextIO

from sqlalchemy import text

from . import account_files, control, credentials
from .account_files import Entry, Refusal
from .addresses import AddressError, normalize_domain
from .store import accounts

#: Passwords derived per task: large enough that pickling is noise beside PBKDF2 (~2.5 ms each),
#: small enough that the cores finish together and the progress bar moves.
CHUNK = 50


@dataclass
class Summary:
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # existed already
    refused: list[Refusal] = field(default_factory=list)
    from_keys: int = 0  # created from SCRAM keys: no digest HA1 until a password is set
    one_hash: int = 0  # of those, with the keys of one SCRAM hash only
    ignored: dict[str, int] = field(default_factory=dict)  # XEP-0227 data not imported
    workers: int = 1


def wanted_secrets(core) -> set[str]:
    """The password-derived secrets besides SCRAM the plugins want (``password_secrets``)."""
    return {name for names in core.hook.password_secrets(core=core) for name in names or ()}


def _derive_chunk(domain: str, digest: bool, items: list[tuple[str, str]]) -> list:
    """In a worker process: Credentials, or the reason a password is refused, per item."""
    out = []
    for local, password in items:
        try:
            out.append(credentials.derive(local, domain, password, digest=digest))
        except credentials.PasswordError as exc:
            out.append(str(exc))
    return out


def derive_all(domain: str, digest: bool, items: list[tuple[str, str]], jobs: int,
               advance: Callable[[int], None]) -> list:
    """:func:`_derive_chunk` over ``items`` on ``jobs`` processes (in this one for one job or a
    single chunk), results in order; ``advance(n)`` as each chunk is done."""
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if jobs <= 1 or len(chunks) <= 1:
        results = []
        for chunk in chunks:
            results += _derive_chunk(domain, digest, chunk)
            advance(len(chunk))
        return results
    # fork: the workers need nothing but this module, already imported; they do no I/O.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_derive_chunk, domain, digest, chunk) for chunk in chunks]
        results = []
        for future, chunk in zip(futures, chunks):
            results += future.result()
            advance(len(chunk))
        return results


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check(core, entries, summary: Summary) -> list[tuple[str, Entry]]:
    """(normalized name, entry) of the records that may become accounts; the rest refused."""
    first: dict[str, str] = {}
    kept = []
    for entry in entries:
        if isinstance(entry, Refusal):
            summary.refused.append(entry)
            continue
        try:
            local = core.address(entry.name).local
            if entry.host is not None and normalize_domain(entry.host or "?") != core.domain:
                raise AddressError(f"host {entry.host!r} is not this server's domain {core.domain}")
        except AddressError as exc:
            summary.refused.append(Refusal(entry.where, entry.name, str(exc)))
            continue
        if local in first:
            summary.refused.append(Refusal(entry.where, entry.name, f"listed before ({first[local]})"))
            continue
        first[local] = entry.where
        kept.append((local, entry))
    return kept


def import_file(core, path: Path, kind: str | None = None, jobs: int | None = None,
                progress: Callable[[int], Callable[[int], None]] | None = None) -> Summary:
    """Import the accounts of ``path`` (see the module docstring). ``progress(total)`` returns
    the function told how many more passwords were derived. Raises FileError for a file that
    cannot be read as a whole, DatabaseError (nothing created) when the store fails."""
    summary = Summary(workers=jobs or default_jobs())
    ignored = account_files.Ignored()
    records = list(account_files.read(path, kind or account_files.detect(path), ignored))
    summary.ignored = ignored.counts
    candidates = _check(core, records, summary)
    exist = accounts.existing(core.db, [local for local, _ in candidates])
    summary.skipped = [local for local, _ in candidates if local in exist]
    new = [(local, entry) for local, entry in candidates if local not in exist]

    with_password = [(local, entry) for local, entry in new if entry.password is not None]
    advance = progress(len(with_password)) if progress else (lambda n: None)
    derived = derive_all(core.domain, "digest" in wanted_secrets(core),
                         [(local, entry.password) for local, entry in with_password],
                         summary.workers, advance)
    made = dict(zip((local for local, _ in with_password), derived))
    ready, keyed = [], {}  # keyed: name → whether keys of both SCRAM hashes came
    for local, entry in new:
        if entry.password is not None:
            creds = made[local]
            if isinstance(creds, str):
                summary.refused.append(Refusal(entry.where, entry.name, creds))
                continue
        else:
            creds, keyed[local] = account_files.credentials_from_scram(entry.scram, core.domain)
        ready.append((local, creds))

    notify = isinstance(core.control.channel, control.NotifyChannel)
    appeared = accounts.create_many(core.db, ready, partial(_notify, core.control) if notify else None)
    for local, creds in ready:
        if local in appeared:  # created by another process since we looked
            summary.skipped.append(local)
            continue
        summary.created.append(local)
        if local in keyed:
            summary.from_keys += 1
            summary.one_hash += not keyed[local]
        address = core.address(local)
        core.hook.on_account(core=core, account=address, change="created", endpoint=None)
        if not notify:
            core.control.publish(address, "created")
    return summary


def _notify(control_: control.Control, conn, names: list[str]) -> None:
    """PostgreSQL: the control path's NOTIFY of every created account, sent by the accounts'
    own commit (one statement, one commit: a NOTIFY in a transaction of its own costs ~3 ms, 30 s
    for 10,000 accounts)."""
    if not names:
        return
    channel = control.channel_name(conn)
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), [
        {"channel": channel,
         "payload": control.encode(control.AccountChange(name, "created", control_.origin)).decode()}
        for name in names])


def export(core, out: TextIO) -> int:
    """Write every account as XEP-0227 with its stored SCRAM keys to ``out``; the count."""
    out.write(account_files.xep0227_header(core.domain))
    count = 0
    for name, creds in accounts.every_credentials(core.db):
        out.write(account_files.xep0227_user(name, creds))
        count += 1
    out.write(account_files.XEP0227_FOOTER)
    return count


def export_prosody(core, data_path: Path) -> tuple[int, list[str]]:
    """Write every account with SCRAM-SHA-1 keys as Prosody's ``<data_path>/<host>/accounts/
    <name>.dat``; (how many, the names left out: no SCRAM-SHA-1 keys). FileExistsError when that
    accounts folder holds files already (nothing is overwritten)."""
    folder = data_path / account_files.prosody_encode(core.domain) / "accounts"
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty")
    count, left_out = 0, []
    for name, creds in accounts.every_credentials(core.db):
        text_ = account_files.prosody_account(creds)
        if text_ is None:
            left_out.append(name)
            continue
        (folder / f"{account_files.prosody_encode(name)}.dat").write_text(text_)
        count += 1
    return count, left_out
