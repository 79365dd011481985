"""Datasets and run files: BEIR folders, TREC runs and qrels, public BEIR downloads, query splits."""

from __future__ import annotations

from winnow.data.beir import load_beir, read_corpus, read_queries
from winnow.data.download import KNOWN_BEIR, fetch_beir
from winnow.data.loading import load_dataset
from winnow.data.splits import QuerySplit, split_query_ids
from winnow.data.trec import read_qrels, read_run, write_qrels, write_run

__all__ = [
    "KNOWN_BEIR",
    "QuerySplit",
    "fetch_beir",
    "load_beir",
    "load_dataset",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "split_query_ids",
    "write_qrels",
    "write_run",
]
