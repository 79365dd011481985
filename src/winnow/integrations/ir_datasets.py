"""``irds:`` dataset ids: any collection ir_datasets knows, read from the files it has already
downloaded (``pip install 'winnow[ir-datasets]'``)::

    winnow eval --dataset irds:beir/scifact/test
    load_dataset("irds:beir/scifact/test")

winnow never downloads through ir_datasets: a collection whose files are not in ir_datasets' home
(``$IR_DATASETS_HOME``, ``~/.ir_datasets`` by default) raises a :class:`~winnow.errors.DatasetError`
naming the id and the command that downloads it, before any connection is tried. ir_datasets has
no offline switch, so while winnow reads, its downloaders (the classes that open a URL) are
replaced by one that raises; local files are read as usual. Documents become winnow documents
(``doc_id``, ``text``, ``title`` when the collection has one; other formats their
``default_text()``); queries their ``text`` (or ``default_text()``); qrels are read whole.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from winnow.errors import DatasetError, require
from winnow.types import Dataset, Document

ir_datasets = require("ir_datasets", "ir-datasets")

from ir_datasets.util import download as _download  # noqa: E402

PREFIX = "irds:"
_BLOCK = threading.Lock()


class NotDownloaded(Exception):
    """Raised in place of a download (caught and turned into a DatasetError)."""


def _refuse(self, *args, **kwargs):
    raise NotDownloaded(getattr(self, "url", repr(self)))


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Every remote downloader of ir_datasets raises NotDownloaded while this block runs."""
    remote = [
        cls
        for cls in vars(_download).values()
        if isinstance(cls, type)
        and issubclass(cls, _download.BaseDownload)
        and cls not in (_download.BaseDownload, _download.LocalDownload)
    ]
    with _BLOCK:
        saved = {cls: cls.__dict__.get("stream") for cls in remote}
        for cls in remote:
            cls.stream = _refuse
        try:
            yield
        finally:
            for cls, original in saved.items():
                if original is None:
                    del cls.stream
                else:
                    cls.stream = original


def _not_downloaded(exc: BaseException) -> str | None:
    """The URL when ``exc`` is (or wraps) a refused download."""
    seen = 0
    stack = [exc]
    while stack and seen < 50:
        e = stack.pop()
        seen += 1
        if isinstance(e, NotDownloaded):
            return str(e)
        for arg in getattr(e, "args", ()):
            if isinstance(arg, BaseException):
                stack.append(arg)
            elif isinstance(arg, (list, tuple)):
                stack.extend(a for a in arg if isinstance(a, BaseException))
                for item in arg:
                    if isinstance(item, tuple):
                        stack.extend(a for a in item if isinstance(a, BaseException))
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                stack.append(linked)
    return None


def _text(item) -> str:
    text = getattr(item, "text", None)
    if isinstance(text, str):
        return text
    return item.default_text()


def load_irds(dataset_id: str) -> Dataset:
    """The collection ``dataset_id`` (with or without the ``irds:`` prefix) as a winnow Dataset."""
    name = dataset_id[len(PREFIX) :] if dataset_id.startswith(PREFIX) else dataset_id
    source = f"{PREFIX}{name}"
    try:
        ds = ir_datasets.load(name)
    except KeyError:
        raise DatasetError(
            f"ir_datasets has no dataset {name!r} (see https://ir-datasets.com for the ids)",
            source,
        ) from None
    for part in ("docs", "queries"):
        if not getattr(ds, f"has_{part}")():
            raise DatasetError(f"ir_datasets' {name!r} has no {part}; winnow needs both", source)
    try:
        with _no_downloads():
            corpus = {
                d.doc_id: Document(d.doc_id, _text(d), getattr(d, "title", "") or "")
                for d in ds.docs_iter()
            }
            queries = {q.query_id: _text(q) for q in ds.queries_iter()}
            qrels: dict[str, dict[str, int]] = {}
            if ds.has_qrels():
                for r in ds.qrels_iter():
                    qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    except Exception as exc:
        url = _not_downloaded(exc)
        if url is None:
            raise
        raise DatasetError(
            f"ir_datasets has not downloaded {name!r} yet and winnow does not download through "
            f"it (offline); download it first, e.g. `ir_datasets export {name} docs > /dev/null` "
            f"(and queries, qrels), then retry. It would fetch {url}",
            source,
        ) from None
    return Dataset(name=source, corpus=corpus, queries=queries, qrels=qrels, source=source)
