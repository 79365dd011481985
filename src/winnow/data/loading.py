"""``load_dataset``: a dataset by folder path, by name in a data folder, or by public BEIR name."""

from __future__ import annotations

import os
from pathlib import Path

from winnow.data.beir import load_beir
from winnow.data.download import KNOWN_BEIR, MARKER, default_cache_dir, fetch_beir
from winnow.data.splits import QuerySplit, is_split_spec
from winnow.errors import DatasetError
from winnow.types import Dataset


def _data_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is None:
        return []
    text = os.fspath(data_dir)
    return [Path(p).expanduser() for p in text.split(os.pathsep) if p]


def load_dataset(
    name_or_path: str | os.PathLike,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    sha256: str | None = None,
    url: str | None = None,
    timeout: float = 60.0,
    show_progress: bool | None = None,
    unknown_ids: str = "error",
) -> Dataset:
    """Load a BEIR-format dataset, looking in this order:

    1. ``name_or_path`` as a folder (or, first, an ``irds:`` id: step 4);
    2. ``<dir>/<name>`` for each folder of ``data_dir`` (one path, or several joined by
       ``os.pathsep``; the CLI passes ``--data-dir`` / ``$WINNOW_DATA``);
    3. ``cache_dir/<name>`` from an earlier download (``~/.cache/winnow/datasets`` by default);
    4. an ir_datasets id ``irds:ID`` (``irds:beir/scifact/test``) read through ir_datasets from
       the files it has already downloaded (never downloading; see
       :mod:`winnow.integrations.ir_datasets`); ``split`` does not apply (the id names it);
    5. a public BEIR dataset (``KNOWN_BEIR``, or any name with ``url=``) downloaded into
       ``cache_dir`` when ``download`` is true, verified against its checksums and ``sha256``.

    ``split`` names a qrels file (``test``, ``dev``, ``train``) or is a split spec such as
    ``train@0.6`` / ``test@0.6:seed0`` (see :mod:`winnow.data.splits`): the source qrels file is
    read and the dataset restricted to that part of its judged queries; no file is written.

    ``unknown_ids="drop"`` skips (with a warning) judgments naming unknown queries or documents
    instead of raising; see :func:`~winnow.data.beir.load_beir`.

    Raises:
        DatasetError: the dataset is malformed, or not found anywhere (the message lists where it
            looked and the names that can be downloaded).
        ConfigError: ``split`` is a malformed split spec.
    """
    if is_split_spec(split):
        query_split = QuerySplit.parse(split)
        full = load_dataset(
            name_or_path,
            query_split.source,
            data_dir,
            cache_dir,
            download,
            sha256=sha256,
            url=url,
            timeout=timeout,
            show_progress=show_progress,
            unknown_ids=unknown_ids,
        )
        return query_split.select(full)
    text = os.fspath(name_or_path)
    if not text:
        raise DatasetError("dataset name is empty")
    if text.startswith("irds:"):  # an ir_datasets id, read from the files it has downloaded
        from winnow.integrations.ir_datasets import load_irds

        return load_irds(text)
    looked: list[str] = []
    path = Path(text).expanduser()
    if path.is_dir():
        return load_beir(path, split, unknown_ids=unknown_ids)
    looked.append(str(path))
    simple_name = "/" not in text and os.sep not in text
    if simple_name:
        for folder in _data_dirs(data_dir):
            candidate = folder / text
            if candidate.is_dir():
                return load_beir(candidate, split, unknown_ids=unknown_ids)
            looked.append(str(candidate))
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        cached = cache / text
        marker = cached / MARKER
        if marker.is_file() and (sha256 is None or marker.read_text().strip() == sha256.lower()):
            return load_beir(cached, split, name=text, unknown_ids=unknown_ids)
        looked.append(str(cached))
        if download and (text in KNOWN_BEIR or url is not None):
            folder = fetch_beir(
                text, cache, url=url, sha256=sha256, timeout=timeout, show_progress=show_progress
            )
            return load_beir(folder, split, name=text, unknown_ids=unknown_ids)
    hint = (
        f"; downloadable by name: {', '.join(sorted(KNOWN_BEIR))}"
        if download
        else " (downloads disabled)"
    )
    raise DatasetError(f"dataset {text!r} not found; looked in: {', '.join(looked)}{hint}")
