"""Tables and collections read from a path or a URL through Daft's readers, and tables written.

``http(s)://``, ``s3://``, ``gs://`` (and whatever else Daft's IO layer reads) work as local
paths do: Daft fetches and parses the files itself, in parallel and in a stream of partitions, so
no hand-written threads and no whole-file download into one Python string. A BEIR collection
from a URL (``https://host/cranfield/`` holding ``corpus.jsonl``, ``queries.jsonl`` and
``qrels/<split>.tsv``) becomes a :class:`~winnow.types.Dataset` partition by partition, every
row checked as ``winnow.data.beir`` checks lines (the error names the file and the row).

Written tables are folders of Parquet or JSON-lines part files (one or more per partition, as
Daft writes them): a local folder is replaced atomically (``_fs.replace_directory``), so a failed
job leaves the old output, never half of a new one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from winnow.distributed.engine import require_daft
from winnow.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: How a table's name ends -> its format.
FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}


def is_url(source: str | os.PathLike) -> bool:
    return "://" in os.fspath(source)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def table_format(source: str | os.PathLike, fmt: str | None = None) -> str:
    """``parquet``, ``jsonl``, ``csv`` or ``tsv`` from ``fmt`` or the name's ending."""
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ConfigError(
                f"format {fmt!r} is not one of {', '.join(sorted(set(FORMATS.values())))}"
            )
        return fmt
    name = os.fspath(source).rstrip("/").lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    path = Path(name)
    if not is_url(name) and path.is_dir():  # a folder this module wrote: its part files say
        for suffix, found in (("*.parquet", "parquet"), ("*.json", "jsonl"), ("*.jsonl", "jsonl")):
            if any(path.glob(suffix)):
                return found
    raise ConfigError(
        f"cannot tell the format of {os.fspath(source)!r}: name it *.parquet or *.jsonl (or "
        "*.csv, *.tsv), or say which with --format"
    )


def read_table(source: str | os.PathLike, fmt: str | None = None, schema: dict | None = None):
    """A lazy Daft DataFrame of a Parquet / JSON-lines / CSV / TSV file, folder or URL."""
    daft = require_daft()
    fmt = table_format(source, fmt)
    text = os.fspath(source)
    if not is_url(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise DatasetError("no such file or folder", path)
        if path.is_dir():
            pattern = "*.parquet" if fmt == "parquet" else ("*.json*" if fmt == "jsonl" else "*")
            text = str(path / pattern)
        else:
            text = str(path)
    if fmt == "parquet":
        return daft.read_parquet(text)
    if fmt == "jsonl":
        return daft.read_json(text, schema=schema)
    return daft.read_csv(text, delimiter="\t" if fmt == "tsv" else ",", schema=schema)


def write_table(df, destination: str | os.PathLike, fmt: str | None = None) -> str:
    """Run ``df`` and write it as a folder of part files; returns the folder. A local folder is
    replaced atomically; a URL is written in place by Daft."""
    from winnow._fs import replace_directory
    from winnow.distributed.jobs import job_errors

    fmt = table_format(destination, fmt)
    if fmt not in ("parquet", "jsonl"):
        raise ConfigError(f"tables are written as Parquet or JSON lines, not {fmt}")
    text = os.fspath(destination)

    def write(target: str) -> None:
        with job_errors():
            if fmt == "parquet":
                df.write_parquet(target)
            else:
                df.write_json(target)

    if is_url(text):
        write(text)
        return text
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {text!r} is a file; tables are written as folders of parts")
    with replace_directory(path) as tmp:
        write(str(tmp))
    return str(path)


# -- collections ---------------------------------------------------------------------------------
def _rows(df) -> Iterator[dict[str, Any]]:
    """Rows of ``df`` in order, a partition at a time (Daft reads ahead while we check)."""
    for part in df.iter_partitions():
        columns = part.to_pydict()
        names = list(columns)
        for values in zip(*(columns[n] for n in names)):
            yield dict(zip(names, values))


def _id(value: Any, key: str, where: str, row: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        what = "null" if value is None else type(value).__name__
        raise DatasetError(f'row {row}: "{key}" must be a string, got {what}', where)
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise DatasetError(f'row {row}: "{key}" {text!r} is empty or contains whitespace', where)
    return text


def _text(value: Any, key: str, where: str, row: int, required: bool) -> str:
    if value is None:
        if required:
            raise DatasetError(f'row {row}: missing "{key}" field', where)
        return ""
    if not isinstance(value, str):
        raise DatasetError(
            f'row {row}: "{key}" must be a string, got {type(value).__name__}', where
        )
    return value


def read_corpus_table(source: str):
    """``{doc_id: Document}`` of a BEIR ``corpus.jsonl`` at a path or URL, read by Daft."""
    from winnow.types import Document

    df = read_table(source, "jsonl")
    for column in ("_id", "text"):
        if column not in df.column_names:
            raise DatasetError(
                f'missing "{column}" field (columns: {", ".join(df.column_names)})', source
            )
    corpus: dict[str, Document] = {}
    for row, rec in enumerate(_rows(df)):
        doc_id = _id(rec.get("_id"), "_id", source, row)
        if doc_id in corpus:
            raise DatasetError(f"row {row}: duplicate document id {doc_id!r}", source)
        text = _text(rec.get("text"), "text", source, row, True)
        corpus[doc_id] = Document(
            doc_id, text, _text(rec.get("title"), "title", source, row, False)
        )
    if not corpus:
        raise DatasetError("the corpus has no documents", source)
    return corpus


def read_queries_table(source: str) -> dict[str, str]:
    """``{query_id: text}`` of a BEIR ``queries.jsonl`` at a path or URL, in file order."""
    df = read_table(source, "jsonl")
    queries: dict[str, str] = {}
    for row, rec in enumerate(_rows(df)):
        qid = _id(rec.get("_id"), "_id", source, row)
        if qid in queries:
            raise DatasetError(f"row {row}: duplicate query id {qid!r}", source)
        queries[qid] = _text(rec.get("text"), "text", source, row, True)
    if not queries:
        raise DatasetError("the file has no queries", source)
    return queries


def read_qrels_table(source: str, corpus, queries) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: relevance}}`` of a BEIR qrels TSV (with its header line)."""
    from daft import DataType

    schema = {"query-id": DataType.string(), "corpus-id": DataType.string()}
    df = read_table(source, "tsv", schema=schema)
    for column in ("query-id", "corpus-id", "score"):
        if column not in df.column_names:
            raise DatasetError(
                f"missing column {column!r} (header: {', '.join(df.column_names)})", source
            )
    qrels: dict[str, dict[str, int]] = {}
    for row, rec in enumerate(_rows(df.select("query-id", "corpus-id", "score"))):
        qid = _id(rec["query-id"], "query-id", source, row)
        doc_id = _id(rec["corpus-id"], "corpus-id", source, row)
        score = rec["score"]
        if isinstance(score, bool) or not isinstance(score, int):
            raise DatasetError(f"row {row}: score must be an integer, got {score!r}", source)
        if qid not in queries:
            raise DatasetError(f"row {row}: query id {qid!r} is not in queries.jsonl", source)
        if doc_id not in corpus:
            raise DatasetError(f"row {row}: document id {doc_id!r} is not in corpus.jsonl", source)
        previous = qrels.get(qid, {}).get(doc_id)
        if previous is not None and previous != score:
            raise DatasetError(
                f"row {row}: conflicting judgment for ({qid!r}, {doc_id!r}): {score} here, "
                f"{previous} before",
                source,
            )
        qrels.setdefault(qid, {})[doc_id] = score
    if not qrels:
        raise DatasetError("the qrels file has no judgments", source)
    return qrels


def load_dataset_url(url: str, split: str = "test"):
    """A BEIR collection from a folder URL (``corpus.jsonl``, ``queries.jsonl``,
    ``qrels/<split>.tsv`` under it), read through Daft. Plain split names only."""
    from winnow.types import Dataset

    if "@" in split:
        raise ConfigError(
            f"split specs ({split!r}) work on local collections only; give a split name"
        )
    corpus = read_corpus_table(_join(url, "corpus.jsonl"))
    queries = read_queries_table(_join(url, "queries.jsonl"))
    qrels = read_qrels_table(_join(url, "qrels", f"{split}.tsv"), corpus, queries)
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    return Dataset(name=name, corpus=corpus, queries=queries, qrels=qrels, source=url)


def read_run_table(source: str) -> dict[str, dict[str, float]]:
    """``{query_id: {doc_id: score}}`` of a TREC run (space-separated, six columns) at a URL."""
    import math

    from daft import DataType

    daft = require_daft()
    names = ["query_id", "q0", "doc_id", "rank", "score", "tag"]
    schema = {n: DataType.string() for n in names}
    schema["rank"], schema["score"] = DataType.int64(), DataType.float64()
    df = daft.read_csv(source, delimiter=" ", has_headers=False, infer_schema=False, schema=schema)
    run: dict[str, dict[str, float]] = {}
    for row, rec in enumerate(_rows(df)):
        qid = _id(rec["query_id"], "query_id", source, row)
        doc_id = _id(rec["doc_id"], "doc_id", source, row)
        score = rec["score"]
        if score is None or math.isnan(score):
            raise DatasetError(f"row {row}: score is missing or NaN", source)
        if doc_id in run.get(qid, {}):
            raise DatasetError(
                f"row {row}: document {doc_id!r} appears twice for query {qid!r}", source
            )
        run.setdefault(qid, {})[doc_id] = float(score)
    return run
