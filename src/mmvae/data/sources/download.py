"""Downloads that never leave a half-written file looking like data.

The bytes go to ``<name>.part`` next to the target; an interrupted transfer is resumed from there with an
HTTP ``Range`` request when the server allows it (status 206), and started over when it does not (200).
Only a complete file whose checksum matches the published one is renamed to its final name (an atomic
``os.replace`` on one file system); on a mismatch the partial file is deleted.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 16


class DownloadError(Exception):
    """A download that did not produce a verified file (network, HTTP or checksum)."""


def file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not value:
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    return algorithm, value.lower()


def _progress(total: int | None, initial: int, name: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not show, leave=False)


def _transfer(url: str, part: Path, timeout: float, show: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming when the server honours Range)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mmvae"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is already complete
            return
        raise
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, _progress(total, have, part.name[:-5], show) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"{url}: connection closed after {part.stat().st_size} of {total} bytes")


def fetch(urls, target: str | Path, checksum: str, timeout: float = 30.0, show_progress: bool = True) -> Path:
    """Download ``target`` from the first mirror in ``urls`` that works; verify; rename into place."""
    target = Path(target)
    if isinstance(urls, str):
        urls = (urls,)
    algorithm, expected = parse_checksum(checksum)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    errors = []
    for url in urls:
        try:
            _transfer(url, part, timeout, show_progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError, DownloadError, ValueError) as e:
            # A part file stays for resuming; it is never read as data under its .part name.
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        actual = file_digest(part, algorithm)
        if actual != expected:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {algorithm} checksum {actual} does not match the published {expected} "
                          f"(the download was deleted)")
            continue
        os.replace(part, target)
        return target
    raise DownloadError("; ".join(errors) or "no URL to download from")
