"""Dense encoding is checkpointed in chunks: an interrupted ``index()`` (an exception, or kill -9)
resumes from the finished chunks and ends with exactly the embeddings of an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from winnow.errors import ConfigError
from winnow.retrieval import DenseIndex
from winnow.testing import sample_corpus
from winnow.types import Document

STEP = 10


class Interrupted(Exception):
    """Stands for whatever stops a run part-way (Ctrl-C, a crash)."""


@pytest.fixture(scope="module")
def corpus():
    texts = sample_corpus()[:45]  # 4 full chunks of 10 and one of 5
    return {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}


def dense(model, cache):
    # memo_mb=0: no in-process embedding memo, so only the disk checkpoints can spare work
    return DenseIndex(model, cache_dir=cache, device="cpu", checkpoint_every=STEP, memo_mb=0)


def spy(monkeypatch, d: DenseIndex, fail_at: int | None = None) -> list[int]:
    """Count the documents each encoder call embeds (the real encoder runs); raise at call
    ``fail_at`` (1-based) to interrupt ``index()`` part-way."""
    calls: list[int] = []
    # the class's method: Dense instances with equal settings share one (cached) encoder
    real = type(d.encoder).encode_documents.__get__(d.encoder)

    def wrapper(texts, **kwargs):
        if fail_at is not None and len(calls) + 1 == fail_at:
            raise Interrupted(f"call {fail_at}")
        calls.append(len(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(d.encoder, "encode_documents", wrapper)
    return calls


def test_interrupted_index_resumes_with_identical_embeddings(
    tiny_bi_encoder, corpus, tmp_path, monkeypatch
):
    reference = dense(tiny_bi_encoder, tmp_path / "ref")
    assert spy(monkeypatch, reference) == []
    reference.index(corpus)
    assert not list((tmp_path / "ref" / "dense-chunks").iterdir())  # removed once complete

    cache = tmp_path / "cache"
    first = dense(tiny_bi_encoder, cache)
    calls = spy(monkeypatch, first, fail_at=3)
    with pytest.raises(Interrupted):
        first.index(corpus)
    assert calls == [STEP, STEP]
    assert len(list((cache / "dense-chunks").iterdir())) == 2
    assert not (cache / "dense").exists()

    second = dense(tiny_bi_encoder, cache)
    calls = spy(monkeypatch, second)
    second.index(corpus)
    assert calls == [STEP, STEP, 5]  # only the chunks that were not finished
    assert np.array_equal(second.embeddings, reference.embeddings)
    assert second.doc_ids == list(corpus)
    assert not list((cache / "dense-chunks").iterdir())
    third = dense(tiny_bi_encoder, cache)
    assert spy(monkeypatch, third) == [] and third.index(corpus).timings["cache_hit"] == 1


def test_damaged_checkpoint_is_encoded_again(tiny_bi_encoder, corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = dense(tiny_bi_encoder, cache)
    spy(monkeypatch, first, fail_at=3)
    with pytest.raises(Interrupted):
        first.index(corpus)
    damaged, _ = sorted((cache / "dense-chunks").iterdir())
    np.save(damaged / "embeddings.npy", np.zeros((3, 2), dtype=np.float32))
    second = dense(tiny_bi_encoder, cache)
    calls = spy(monkeypatch, second)
    second.index(corpus)
    assert sum(calls) == len(corpus) - STEP  # one checkpoint reused, the damaged one redone


def test_kill_9_part_way_then_resume(tiny_bi_encoder, corpus, tmp_path):
    """A real SIGKILL after two chunks: the rerun encodes only the rest, and the result equals an
    uninterrupted run's bit for bit."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        import numpy as np
        from winnow.retrieval import DenseIndex
        from winnow.testing import sample_corpus
        from winnow.types import Document

        model, cache, kill_at, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
        corpus = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(sample_corpus()[:45])}
        d = DenseIndex(model, cache_dir=cache, device="cpu", checkpoint_every=10, memo_mb=0)
        real, calls = d.encoder.encode_documents, []

        def encode(texts, **kwargs):
            if len(calls) + 1 == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(len(texts))
            return real(texts, **kwargs)

        d.encoder.encode_documents = encode
        d.index(corpus)
        np.save(out, d.embeddings)
        print(calls)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(cache, kill_at, out):
        return subprocess.run(
            [sys.executable, "-c", script, tiny_bi_encoder, str(cache), str(kill_at), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    killed = run(tmp_path / "cache", 3, tmp_path / "never.npy")
    assert killed.returncode == -9, killed.stderr
    assert len(list((tmp_path / "cache" / "dense-chunks").iterdir())) == 2
    resumed = run(tmp_path / "cache", 0, tmp_path / "resumed.npy")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "[10, 10, 5]"
    whole = dense(tiny_bi_encoder, tmp_path / "fresh").index(corpus).embeddings
    assert np.array_equal(np.load(tmp_path / "resumed.npy"), whole)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_checkpoint_every_is_validated(tiny_bi_encoder, bad):
    with pytest.raises(ConfigError, match="checkpoint_every"):
        DenseIndex(tiny_bi_encoder, device="cpu", checkpoint_every=bad)
