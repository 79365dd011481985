"""``irds:`` ids read through ir_datasets from local files, and the offline error otherwise
(no connection is ever tried)."""

from __future__ import annotations

import uuid

import ir_datasets
import pytest
from ir_datasets.datasets.base import Dataset as IrdsDataset
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
from ir_datasets.util import Download, RequestsDownload
from ir_datasets.util.download import LocalDownload

from winnow.data import load_dataset
from winnow.errors import DatasetError


def register_local(tmp_path) -> str:
    (tmp_path / "docs.tsv").write_text("d1\twings make lift\nd2\theat transfer in a plate\n")
    (tmp_path / "queries.tsv").write_text("q1\thow do wings lift\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 2\nq1 0 d2 0\n")
    name = f"winnow-test/{uuid.uuid4().hex}"
    ir_datasets.registry.register(
        name,
        IrdsDataset(
            TsvDocs(LocalDownload(tmp_path / "docs.tsv")),
            TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
            TrecQrels(LocalDownload(tmp_path / "qrels.txt"), {0: "not", 2: "very"}),
        ),
    )
    return name


def test_irds_id_reads_local_files(tmp_path):
    name = register_local(tmp_path)
    ds = load_dataset(f"irds:{name}")
    assert ds.name == f"irds:{name}"
    assert {k: d.text for k, d in ds.corpus.items()} == {
        "d1": "wings make lift",
        "d2": "heat transfer in a plate",
    }
    assert ds.queries == {"q1": "how do wings lift"}
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}}


def test_not_downloaded_is_a_clear_offline_error(tmp_path):
    name = f"winnow-test/{uuid.uuid4().hex}"
    # a remote file that is not in the cache: reading it would download (port 9 is "discard")
    remote = Download([RequestsDownload("http://127.0.0.1:9/docs.tsv")], tmp_path / "docs.tsv")
    local = LocalDownload(tmp_path / "q.tsv")
    (tmp_path / "q.tsv").write_text("q1\tx\n")
    ir_datasets.registry.register(name, IrdsDataset(TsvDocs(remote), TsvQueries(local)))
    with pytest.raises(DatasetError, match=r"has not downloaded .*ir_datasets export") as err:
        load_dataset(f"irds:{name}")
    assert "http://127.0.0.1:9/docs.tsv" in str(err.value)
    assert not (tmp_path / "docs.tsv").exists()


def test_a_real_id_not_downloaded_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    monkeypatch.setattr(ir_datasets.util, "home_path", lambda: tmp_path)
    with pytest.raises(DatasetError, match="has not downloaded 'beir/scifact/test'"):
        load_dataset("irds:beir/scifact/test")


def test_unknown_id_is_named():
    with pytest.raises(DatasetError, match="ir_datasets has no dataset 'no/such/thing'"):
        load_dataset("irds:no/such/thing")
