"""Acceptance figures on the real collections (../shared/datasets): BM25 through ``winnow eval``.

Reference values are the converters' own BM25 runs (bm25s lucene, k1=1.5, b=0.75, stemmed,
title + text, scored with pytrec_eval), recorded in each collection's SOURCE.md.
"""

from __future__ import annotations

import json

import pytest

from winnow.cli import main

# collection -> (queries, nDCG@10, MAP, P@10, R@1000) from SOURCE.md, "stem" rows
REFERENCE = {
    "cranfield": (225, 0.3730, 0.3104, 0.2369, 0.9515),
    "cisi": (76, 0.3956, 0.2224, 0.3618, 0.9292),
    "adi": (35, 0.4938, 0.4185, 0.2143, 0.9103),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_bm25_matches_the_reference_figures(name, shared_datasets, tmp_path, capsys):
    out = tmp_path / name
    args = ["eval", "--dataset", name, "--data-dir", str(shared_datasets), "--systems", "bm25"]
    args += ["--no-cache", "--no-plot", "--output", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    doc = json.loads((out / "metrics.json").read_text())
    queries, ndcg, ap, p10, r1000 = REFERENCE[name]
    bm25 = doc["systems"]["bm25"]
    assert doc["queries"] == queries
    assert bm25["nDCG@10"] == pytest.approx(ndcg, abs=0.01)
    assert bm25["MAP"] == pytest.approx(ap, abs=0.01)
    assert bm25["P@10"] == pytest.approx(p10, abs=0.01)
    assert bm25["R@1000"] == pytest.approx(r1000, abs=0.01)
