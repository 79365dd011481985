"""Fetching public BEIR collections: streamed download, checksum, safe unzip, cached on disk.

The archive addresses and md5 checksums are the ones the BEIR README publishes
(https://github.com/beir-cellar/beir, "Available Datasets"); sha256 is given only where the archive's
digest is recorded by more than one independent source. Whatever is known is verified; a user can
pass ``sha256=`` (``--sha256``) to pin any archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from winnow._fs import atomic_directory
from winnow._progress import progress_enabled
from winnow.errors import DatasetError

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
#: File written into a cached dataset folder once it is complete; holds the archive's sha256.
MARKER = ".winnow-download"


@dataclass(frozen=True)
class KnownDataset:
    """A public archive: where it lives and the checksums it is known to have."""

    name: str
    url: str
    md5: str | None = None  # published by BEIR
    sha256: str | None = None


def _beir(name: str, md5: str, sha256: str | None = None) -> KnownDataset:
    return KnownDataset(name, BEIR_URL.format(name=name), md5=md5, sha256=sha256)


#: Public BEIR collections that ``load_dataset`` downloads by name.
KNOWN_BEIR: dict[str, KnownDataset] = {
    d.name: d
    for d in (
        _beir(
            "scifact",
            "5f7d1de60b170fc8027bb7898e2efca1",
            "536e14446a0ba56ed1398ab1055f39fe852686ecad24a6306c80c490fa8e0165",
        ),
        _beir("nfcorpus", "a89dba18a62ef92f7d323ec890a0d38d"),
        _beir(
            "fiqa",
            "17918ed23cd04fb15047f73e6c3bd9d9",
            "32c7df99ed21252fdfb2cf3f5673502a8d245ee0c44c4a133570d92ce2b3ad02",
        ),
        _beir("arguana", "8ad3e3c2a5867cdced806d6503f29b99"),
        _beir("scidocs", "38121350fc3a4d2f48850f6aff52e4a9"),
        _beir("trec-covid", "ce62140cb23feb9becf6270d0d1fe6d1"),
        _beir("webis-touche2020", "6e29ac6c57e2d227fb57501872cac45f"),
        _beir("quora", "18fb154900ba42a600f84b839c173167"),
        _beir("nq", "d4d3d2e48787a744b6f6e691ff534307"),
        _beir("hotpotqa", "f412724f78b0d91183a0e86805e16114"),
        _beir("dbpedia-entity", "c2a39eb420a3164af735795df012ac2c"),
        _beir("fever", "88591ef8eb2913126d0c93ecbde6285f"),
        _beir("climate-fever", "8b66f0a9126c521bae2bde127b4dc99d"),
        _beir("msmarco", "444067daf65d982533ea17ebd59501e4"),
    )
}


def default_cache_dir() -> Path:
    """``~/.cache/winnow/datasets``."""
    return Path.home() / ".cache" / "winnow" / "datasets"


def _download(url: str, dest: Path, timeout: float, show_progress: bool | None) -> tuple[str, str]:
    """Stream ``url`` into ``dest``; return its (sha256, md5)."""
    import httpx
    from tqdm.auto import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5()
    progress = progress_enabled(show_progress)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise DatasetError(f"download of {url} failed: HTTP {response.status_code}")
            total = int(response.headers.get("content-length") or 0) or None
            with (
                open(dest, "wb") as f,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=url.rsplit("/", 1)[-1],
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        raise DatasetError(f"download of {url} failed: {type(exc).__name__}: {exc}") from exc
    return sha.hexdigest(), md5.hexdigest()


#: Refuse archives that would unpack to more than this (the largest BEIR corpus unpacks to a few GB).
MAX_UNPACKED_BYTES = 64 << 30


def safe_extract(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Extract a zip into ``dest``, refusing absolute paths, ``..`` components, symlinks and
    archives that would unpack to more than ``max_bytes``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > max_bytes:
                raise DatasetError(
                    f"archive would unpack to {total} bytes, more than the limit of {max_bytes}",
                    archive,
                )
            for info in zf.infolist():
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DatasetError(f"unsafe path {name!r} in archive", archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DatasetError(f"symbolic link {name!r} in archive", archive)
                target = (dest / Path(*parts)).resolve() if parts else dest.resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DatasetError(f"unsafe path {name!r} in archive", archive)
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"not a valid zip archive ({exc})", archive) from exc


def _dataset_root(folder: Path) -> Path:
    """The folder holding corpus.jsonl: ``folder`` itself or its single subfolder (BEIR zips)."""
    if (folder / "corpus.jsonl").is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__", "."))]
    if len(subs) == 1 and (subs[0] / "corpus.jsonl").is_file():
        return subs[0]
    raise DatasetError("archive holds no BEIR folder (no corpus.jsonl at its top)", folder)


def fetch_beir(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
    show_progress: bool | None = None,
) -> Path:
    """Download and unpack a BEIR zip into ``cache_dir/<name>``; return that folder.

    A folder already there (completed by an earlier call, and matching ``sha256`` when given) is
    returned with no request. Otherwise the archive is streamed to a temporary file (``timeout``
    applies to connecting and to each read), its checksums verified, unzipped safely into a
    temporary folder and renamed into place, so an interrupted fetch leaves nothing behind.

    Checksums: without ``url``, those of :data:`KNOWN_BEIR` (``sha256`` / ``md5`` given here take
    precedence); with ``url`` (a mirror or another archive) only the ones given here.

    Raises:
        DatasetError: unknown name without ``url``, HTTP or network failure, checksum mismatch,
            or an archive that is not a safe BEIR zip.
    """
    known = KNOWN_BEIR.get(name)
    if url is None:
        if known is None:
            raise DatasetError(
                f"unknown public dataset {name!r}; known: {', '.join(sorted(KNOWN_BEIR))}. "
                "Pass url= to fetch another archive."
            )
        url = known.url
        sha256 = sha256 or known.sha256
        md5 = md5 or known.md5
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise DatasetError(f"invalid dataset name {name!r}")
    sha256 = sha256.lower() if sha256 else None
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / name
    marker = target / MARKER
    if marker.is_file():
        recorded = marker.read_text().strip()
        if sha256 is None or recorded == sha256:
            logger.debug("using cached %s", target)
            return target
        logger.warning(
            "cached %s has sha256 %s, expected %s: fetching again", target, recorded, sha256
        )
        shutil.rmtree(target)
    elif target.exists():
        raise DatasetError(
            "folder exists but was not completed by a download; remove it or load it as a path",
            target,
        )
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=root)
    os.close(fd)
    archive = Path(tmp_name)
    try:
        logger.info("downloading %s", url)
        got_sha, got_md5 = _download(url, archive, timeout, show_progress)
        if sha256 and got_sha != sha256:
            raise DatasetError(f"sha256 mismatch for {url}: expected {sha256}, got {got_sha}")
        if md5 and got_md5 != md5.lower():
            raise DatasetError(f"md5 mismatch for {url}: expected {md5}, got {got_md5}")
        with atomic_directory(target) as staging:
            safe_extract(archive, staging / "unzipped")
            found = _dataset_root(staging / "unzipped")
            for item in found.iterdir():
                os.replace(item, staging / item.name)
            shutil.rmtree(staging / "unzipped")
            (staging / MARKER).write_text(got_sha + "\n")
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
    return target
