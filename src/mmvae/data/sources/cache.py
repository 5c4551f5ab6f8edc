"""Where real datasets live: a folder per dataset under one data root, found without the network.

Search order for a dataset's files:
  1. ``--data-dir DIR`` (``data.data_dir``): ``DIR/<dataset>/`` and then ``DIR`` itself, used as is:
     nothing is ever downloaded into it or checked against checksums (a user's own copy may be
     re-compressed, e.g. Debian's Fashion-MNIST);
  2. the cache: ``$MMVAE_DATA/<dataset>/`` or, without ``$MMVAE_DATA``, ``<user cache>/mmvae/<dataset>/``
     (``$XDG_CACHE_HOME`` or ``~/.cache``; ``%LOCALAPPDATA%`` on Windows); downloads go here;
  3. system folders that a package manager fills, e.g. ``/usr/share/datasets/fashion-mnist``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, checksum as published (``md5:<hex>`` or ``sha256:<hex>``), mirrors.

    ``alternatives`` are other names the same data may have on disk (e.g. the uncompressed IDX file)."""

    name: str
    checksum: str
    urls: tuple[str, ...]
    alternatives: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.alternatives)


@dataclass(frozen=True)
class DataSource:
    """A dataset's files and where else they may already be."""

    name: str
    files: tuple[RemoteFile, ...]
    homepage: str
    system_dirs: tuple[str, ...] = field(default=())

    def urls(self) -> list[str]:
        return [f.urls[0] for f in self.files if f.urls]


def cache_root() -> Path:
    """``$MMVAE_DATA`` or the user's cache folder + ``mmvae``."""
    env = os.environ.get("MMVAE_DATA")
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win") and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "mmvae"
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "mmvae"


def cache_dir(name: str) -> Path:
    return cache_root() / name


def find_file(folder: Path, file: RemoteFile) -> Path | None:
    for n in file.names:
        p = folder / n
        if p.is_file():
            return p
    return None


def candidate_dirs(source: DataSource, data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return [d / source.name, d]
    return [cache_dir(source.name), *(Path(s) for s in source.system_dirs)]


def locate(source: DataSource, data_dir: str | Path | None = None) -> dict[str, Path] | None:
    """Paths of all the source's files from the first folder that holds every one, or None."""
    for folder in candidate_dirs(source, data_dir):
        found = {f.name: find_file(folder, f) for f in source.files}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def is_present(source: DataSource, data_dir: str | Path | None = None) -> bool:
    return locate(source, data_dir) is not None


def missing_message(source: DataSource, data_dir: str | Path | None, reason: str = "") -> str:
    """One paragraph naming the files to place and where."""
    names = ", ".join(f.name for f in source.files)
    if data_dir is not None:
        where = f"{Path(data_dir) / source.name} (or {data_dir} itself)"
        how = "--data-dir is used as is: nothing is downloaded into it"
    else:
        where = str(cache_dir(source.name))
        how = "set $MMVAE_DATA to use another cache folder, or pass --data-dir DIR"
    urls = " ".join(source.urls())
    text = f"dataset '{source.name}' needs the files {names} in {where}"
    if reason:
        text += f" ({reason})"
    text += f"; {how}. " + (f"Get them from {source.homepage}" if source.homepage.startswith("http")
                            else source.homepage)
    if urls:
        text += f", e.g. {urls}"
    return text


def present_or_fetch(source: DataSource, data_dir: str | Path | None = None, download: bool = True) -> dict[str, Path]:
    """The source's files, downloading into the cache when they are missing and a network is there.

    With ``data_dir`` the folder is used as is; a missing file raises a UserError naming it."""
    found = locate(source, data_dir)
    if found is not None:
        return found
    downloadable = all(f.urls for f in source.files)
    if data_dir is not None or not download or not downloadable:
        off = data_dir is None and downloadable and not download
        raise UserError(missing_message(source, data_dir, "downloads are off: data.download=false" if off else ""))
    from .download import DownloadError, fetch

    folder = cache_dir(source.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(missing_message(source, None, f"the cache folder {folder} cannot be written ({e.strerror}); "
                                                      f"set $MMVAE_DATA to a writable folder")) from None
    out = {}
    try:
        for f in source.files:
            out[f.name] = find_file(folder, f) or fetch(f.urls, folder / f.name, f.checksum)
    except DownloadError as e:
        raise UserError(missing_message(source, None, f"download failed: {e}")) from None
    return out


def availability(source: DataSource) -> tuple[bool, str]:
    """For ``mmvae datasets``: ready when the files are in the cache or a system folder."""
    found = locate(source)
    if found is not None:
        return True, f"files in {next(iter(found.values())).parent}"
    return False, f"not here: downloaded into {cache_dir(source.name)} on first use, or use --data-dir"
