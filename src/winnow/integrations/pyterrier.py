"""PyTerrier transformers wrapping winnow rerankers and pipelines (``pip install 'winnow[pyterrier]'``).

PyTerrier's own transformers (``pt.Transformer``) take and return pandas DataFrames; these two run
without a Java VM (PyTerrier 1.x starts one only for Terrier's Java indexes and retrievers)::

    import pyterrier as pt
    from winnow.integrations.pyterrier import WinnowReranker, WinnowRetriever

    retrieve = WinnowRetriever(BM25().bind(dataset))          # qid, query -> + docno, score, rank
    pipe = retrieve % 100 >> WinnowReranker(reranker) % 10  # PyTerrier's own operators
    pt.Experiment([retrieve, pipe], topics, qrels, eval_metrics=["ndcg_cut_10"])

Ranks follow PyTerrier's convention (``pt.model.add_ranks``: 0 for the best document); scores are
winnow's. Input frames are never modified.
"""

from __future__ import annotations

from typing import Any

from winnow.errors import InputError, require

pt = require("pyterrier", "pyterrier")

import pandas as pd  # noqa: E402  (a dependency of pyterrier)

from winnow.integrations import as_reranker  # noqa: E402


def _need(frame: Any, columns: tuple[str, ...], who: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{who} takes a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{who} needs the columns {', '.join(columns)}; the frame has no {', '.join(missing)} "
            f"(it has {', '.join(map(str, frame.columns))})"
        )


class WinnowReranker(pt.Transformer):
    """Re-score each ``(qid, query, docno, text)`` row with a winnow reranker.

    Args:
        reranker: a winnow ``Reranker`` or a model spec string.
        text_field: the column holding the document text (``text``, as PyTerrier's ``get_text``
            writes it).
    """

    def __init__(self, reranker: Any, text_field: str = "text"):
        self.reranker = as_reranker(reranker)
        self.text_field = text_field

    def __repr__(self) -> str:
        return f"WinnowReranker({self.reranker.config.model!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        _need(inp, ("qid", "query", "docno", self.text_field), "WinnowReranker")
        out = inp.drop(columns=[c for c in ("score", "rank") if c in inp.columns])
        if out.empty:
            return out.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        groups = list(out.groupby("qid", sort=False))
        queries, documents = [], []
        for qid, group in groups:
            query = group["query"].iloc[0]
            if not isinstance(query, str):
                raise InputError(f"the query of qid {qid!r} is {type(query).__name__}, not str")
            queries.append(query)
            documents.append([str(t) for t in group[self.text_field]])
        ranked = self.reranker.rank_many(queries, documents, return_documents=False)
        scores = pd.Series(0.0, index=out.index)
        for (_, group), hits in zip(groups, ranked):
            for hit in hits:
                scores[group.index[hit.index]] = hit.score
        out = out.assign(score=scores)
        return pt.model.add_ranks(out).sort_values(["qid", "rank"], kind="stable")


class WinnowRetriever(pt.Transformer):
    """Run a bound winnow pipeline (``stage.bind(collection)``) on ``(qid, query)`` topics.

    Returns ``qid, query, docno, score, rank`` (and ``text`` with ``add_text=True``), best first.
    """

    def __init__(self, pipeline: Any, *, add_text: bool = False):
        from winnow.pipeline.bound import BoundPipeline

        if not isinstance(pipeline, BoundPipeline):
            raise InputError(
                "WinnowRetriever needs a bound pipeline: stage.bind(collection), got "
                f"{type(pipeline).__name__}"
            )
        self.pipeline = pipeline
        self.add_text = add_text

    def __repr__(self) -> str:
        return f"WinnowRetriever({self.pipeline.stage.label!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        from winnow.pipeline.base import top_docs

        _need(inp, ("qid", "query"), "WinnowRetriever")
        topics = dict(zip(inp["qid"].astype(str), inp["query"]))
        run = self.pipeline(topics)
        corpus = self.pipeline.dataset.corpus
        rows = []
        for qid, query in topics.items():
            for rank, (doc_id, score) in enumerate(top_docs(run.get(qid, {}))):
                row = {"qid": qid, "query": query, "docno": doc_id, "score": score, "rank": rank}
                if self.add_text:
                    row["text"] = corpus[doc_id].full_text
                rows.append(row)
        columns = ["qid", "query", "docno", "score", "rank"] + (["text"] if self.add_text else [])
        return pd.DataFrame(rows, columns=columns)
