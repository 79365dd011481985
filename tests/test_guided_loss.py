"""RerankerGuidedGISTLoss: equal to a full-matrix reference and to GISTEmbedLoss, exact call counts,
masking on the guide's scale, duplicates, gradients through the student only, cached == uncached."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import winnow
from winnow.errors import ConfigError, InputError
from winnow.testing import sample_corpus

TEXTS = sample_corpus(200, seed=11)


def _rows(n: int, negatives: int = 1, offset: int = 0) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        base = offset + i * (2 + negatives)
        row = {"anchor": TEXTS[base], "positive": TEXTS[base + 1]}
        for m in range(negatives):
            row["negative" if negatives == 1 else f"negative_{m + 1}"] = TEXTS[base + 2 + m]
        out.append(row)
    return out


def _features(model, rows):
    """The features SentenceTransformerTrainer hands a loss, built by winnow's collator."""
    from sentence_transformers import SentenceTransformerTrainer

    from winnow.training import GuidedDataCollator

    batch = GuidedDataCollator(preprocess_fn=model.preprocess)(rows)
    features, _ = SentenceTransformerTrainer.collect_features(None, batch)
    return features


@pytest.fixture(scope="module")
def student(tiny_bi_encoder):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_bi_encoder)
    model.eval()  # no dropout: runs are comparable
    return model


@pytest.fixture(scope="module")
def guide_bi_encoder(models_dir):
    from winnow.testing import build_tiny_bi_encoder

    return str(build_tiny_bi_encoder(models_dir / "guide-bi", seed=3))


class TableGuide:
    """A guide with known scores (a lookup table): the dummy engine for exact masking checks."""

    def __init__(self, table: dict[tuple[str, str], float]):
        self.table = table
        self.asked: list[tuple[str, str]] = []

    def score_pairs(self, pairs):
        self.asked.extend(pairs)
        return np.array([self.table[p] for p in pairs], dtype=np.float32)


def _reference_loss(
    model, rows, guide, *, margin, strategy, anchors=True, positives=True, tau=0.01
):
    """GISTEmbed written out plainly: every in-batch pair scored by the guide, python loops."""
    columns = list(rows[0])
    texts = [[r[c] for r in rows] for c in columns]
    emb = [model(f)["sentence_embedding"] for f in _strip(_features(model, rows))]
    cos = torch.nn.CosineSimilarity(dim=-1)
    b = len(rows)
    blocks = [(0, 1)] + ([(0, 0)] if anchors else []) + ([(1, 1)] if positives else [])
    blocks += [(0, m) for m in range(2, len(columns))]
    known = {(r["anchor"], r["positive"]) for r in rows}
    loss = 0.0
    for i in range(b):
        g_pos = float(guide.score_pairs([(texts[0][i], texts[1][i])])[0])
        thr = g_pos - margin if strategy == "absolute" else g_pos - abs(g_pos) * margin
        logits = []
        for q, c in blocks:
            for j in range(b):
                s = cos(emb[q][i], emb[c][j])
                query, cand = texts[q][i], texts[c][j]
                if (q, c) == (0, 1) and j == i:
                    logits.append(s)
                    continue
                if cand in (texts[0][i], query) or (texts[0][i], cand) in known:
                    masked = True
                else:
                    masked = float(guide.score_pairs([(query, cand)])[0]) > thr
                logits.append(torch.tensor(-math.inf) if masked else s)
        row = torch.stack(logits) / tau
        loss = loss + torch.nn.functional.cross_entropy(row[None], torch.tensor([i]))
    return loss / b


def _strip(features):
    return [{k: v for k, v in f.items() if k != "texts"} for f in features]


@pytest.mark.parametrize(
    "knobs",
    [
        {"preset": "unfiltered"},
        {  # the filtered code path, with every filter keeping everything
            "preset": "balanced",
            "similarity_threshold": -1.0,
            "top_k_ratio": 1.0,
            "min_top_k": 10**6,
            "max_candidates": None,
            "hybrid_threshold": None,
        },
    ],
    ids=["unfiltered", "keep-everything"],
)
@pytest.mark.parametrize(("margin", "strategy"), [(0.0, "absolute"), (0.2, "relative")])
def test_loss_equals_full_matrix_reference(student, tiny_bert, knobs, margin, strategy):
    from winnow.training import RerankerGuidedGISTLoss

    guide = winnow.load_reranker(tiny_bert)
    rows = _rows(6, negatives=2)
    loss = RerankerGuidedGISTLoss(student, guide, margin=margin, margin_strategy=strategy, **knobs)
    with torch.no_grad():
        ours = loss(_features(student, rows), None)
        ref = _reference_loss(student, rows, guide, margin=margin, strategy=strategy)
    assert torch.isfinite(ours)
    assert abs(float(ours) - float(ref)) < 1e-6
    stats = loss.last_stats
    # unfiltered: every pair but the text-decided ones (anchor and positive self-pairs) goes out
    assert stats.all_pairs == 6 * 6 * 5
    assert stats.guide_pairs == stats.unfiltered_pairs == 6 * 6 * 5 - 2 * 6


@pytest.mark.parametrize(
    ("margin", "strategy", "anchors", "positives"),
    [
        (0.0, "absolute", True, True),
        (0.05, "relative", True, False),
        (0.1, "absolute", False, True),
    ],
)
def test_bi_encoder_guide_equals_gist_embed_loss(
    student, guide_bi_encoder, margin, strategy, anchors, positives
):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    from winnow.training import RerankerGuidedGISTLoss

    rows = _rows(8, negatives=1)
    settings = dict(
        margin=margin,
        margin_strategy=strategy,
        contrast_anchors=anchors,
        contrast_positives=positives,
    )
    st_guide = SentenceTransformer(guide_bi_encoder)
    reference = GISTEmbedLoss(student, st_guide, **settings)
    ours = RerankerGuidedGISTLoss(
        student,
        winnow.load_reranker(guide_bi_encoder, kind="bi-encoder"),
        preset="unfiltered",
        **settings,
    )
    with torch.no_grad():
        expected = reference(_strip(_features(student, rows)), None)
        got = ours(_features(student, rows), None)
    assert abs(float(got) - float(expected)) < 1e-5, (float(got), float(expected))


def test_masking_on_the_guide_scale_with_negative_scores():
    """Hand-built batch: student similarities and guide scores given, every decision checked."""
    from winnow.training.guidance import Guidance, GuideScoreCache, guide_mask, plan_batch

    # 3 rows; columns: p0 p1 p2 (anchor-positive block) then n0 n1 n2 (anchor-negative block)
    sims = torch.tensor(
        [
            [0.90, 0.10, 0.60, 0.50, 0.20, 0.70],
            [0.35, 0.80, 0.20, 0.50, 0.45, 0.10],
            [0.25, 0.55, 0.50, 0.28, 0.60, 0.90],
        ]
    )
    texts = ["a0", "a1", "a2", "p0", "p1", "p2", "n0", "n1", "n2"]
    anchor_ids, positive_ids = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    candidate_ids = torch.tensor([3, 4, 5, 6, 7, 8])
    query_ids = anchor_ids[:, None].expand(3, 6)
    guidance = Guidance(
        similarity_threshold=0.3,
        top_k_ratio=0.34,  # ceil(0.34 * 3) = 2 candidates per anchor
        min_top_k=1,
        max_candidates=100,
        hybrid_threshold=0.5,
        margin=0.5,
        margin_strategy="relative",
    )
    # negative scores: threshold = pos - |pos| * 0.5, e.g. -2 -> -3 (not -2 * 0.5 = -1)
    table = {
        ("a0", "p0"): -2.0,
        ("a0", "p2"): -2.5,  # > -3: masked
        ("a0", "n2"): -3.5,  # kept
        ("a1", "p1"): 4.0,
        ("a1", "n0"): 2.5,  # > 2: masked
        ("a1", "n1"): 1.5,  # kept
        ("a2", "p2"): -1.0,
        ("a2", "n2"): -1.5,  # == threshold: kept (strictly greater masks, as GISTEmbed)
        ("a2", "n1"): -1.4,  # masked
    }
    guide = TableGuide(table)
    cache = GuideScoreCache()
    plan = plan_batch(sims, query_ids, candidate_ids, anchor_ids, positive_ids, guidance)
    mask = guide_mask(plan, query_ids, candidate_ids, texts, guide.score_pairs, cache, guidance)
    # the student rule has the same relative margin: masked iff s > s_ap - |s_ap| * 0.5
    # row 0: p1, n1 easy; top-2 of {p2 .6, n0 .5, n2 .7} = n2, p2 to the guide; n0 by the
    #        student: .5 > .9 - .45, masked
    # row 1: p2, n2 easy; p0 (.35 < .5 * .8) by the student: kept; n0, n1 to the guide
    # row 2: p0, n0 easy; top-2 n2, n1 to the guide; p1 (.55) by the student: .55 > .5 - .25
    expected = torch.tensor(
        [
            [False, False, True, True, False, False],
            [False, False, False, True, False, False],
            [False, True, False, False, True, False],
        ]
    )
    assert torch.equal(mask, expected)
    assert sorted(guide.asked) == sorted(table)
    s = plan.stats
    assert (s.all_pairs, s.unfiltered_pairs, s.guide_pairs) == (18, 18, 9)
    assert (s.reranker_calls, s.cache_hits, s.easy_negatives) == (9, 0, 6)
    assert (s.masked_by_guide, s.masked_by_student, s.masked_by_text) == (3, 2, 0)
    # the same batch again: every guide score comes from the cache
    plan = plan_batch(sims, query_ids, candidate_ids, anchor_ids, positive_ids, guidance)
    again = guide_mask(plan, query_ids, candidate_ids, texts, guide.score_pairs, cache, guidance)
    assert torch.equal(again, expected)
    assert (plan.stats.reranker_calls, plan.stats.cache_hits) == (0, 9)
    assert len(guide.asked) == 9


def test_call_counts_match_a_brute_force_triage(student, tiny_bert):
    """Balanced preset on 24 rows: the loss asks the guide exactly the pairs the rules name."""
    from winnow.training import RerankerGuidedGISTLoss

    rows = _rows(24, negatives=1, offset=0)
    guide = winnow.load_reranker(tiny_bert)
    asked: list[tuple[str, str]] = []

    class Spy:
        config = guide.config

        def score_pairs(self, pairs):
            asked.extend(pairs)
            return guide.score_pairs(pairs)

    loss = RerankerGuidedGISTLoss(student, Spy(), preset="balanced", min_top_k=3)
    features = _features(student, rows)
    with torch.no_grad():
        emb = [student(f)["sentence_embedding"] for f in _strip(features)]
        loss(features, None)
    texts = [[r[c] for r in rows] for c in rows[0]]
    norm = [torch.nn.functional.normalize(e, dim=-1) for e in emb]
    blocks = [(0, 1), (0, 0), (1, 1), (0, 2)]
    k = max(3, math.ceil(0.1 * 24))  # = 3: top_k_ratio x batch, clamped to [3, 100]
    expected = set()
    for i in range(24):
        s_ap = float(norm[0][i] @ norm[1][i])
        scored = []
        for q, c in blocks:
            for j in range(24):
                if (q, c) == (0, 1) and j == i:
                    continue
                cand = texts[c][j]
                if cand in (texts[0][i], texts[q][i], texts[1][i]):
                    continue
                s = float(norm[q][i] @ norm[c][j])
                if s >= 0.3 and s >= 0.5 * s_ap:
                    scored.append((s, (texts[q][i], cand)))
        top = [p for _, p in sorted(scored, reverse=True)[:k]]
        expected.update(top)
        if top:
            expected.add((texts[0][i], texts[1][i]))
    assert set(asked) == expected and len(asked) == len(expected)
    stats = loss.last_stats
    assert stats.reranker_calls == stats.guide_pairs == len(expected)
    assert stats.unfiltered_pairs == 24 * 24 * 4 - 2 * 24
    assert stats.guide_pairs < stats.unfiltered_pairs


def test_duplicate_texts_are_masked_but_the_positive_never(student, tiny_bert):
    from winnow.training import RerankerGuidedGISTLoss

    rows = _rows(5, negatives=1)
    rows[1]["positive"] = rows[0]["positive"]  # a copy of row 0's positive
    rows[2]["anchor"] = rows[0]["anchor"]  # the same query twice
    rows[3]["negative"] = rows[0]["positive"]  # a mined "negative" that is row 0's positive
    guide = TableGuide({})
    guide.score_pairs = lambda pairs: np.full(len(pairs), -100.0, dtype=np.float32)  # never masks
    loss = RerankerGuidedGISTLoss(student, guide, preset="unfiltered")
    features = _features(student, rows)
    with torch.no_grad():
        emb = [student(f)["sentence_embedding"] for f in _strip(features)]
    texts = [[r[c] for r in rows] for c in rows[0]]
    mask = loss.mask(emb, texts)
    b = 5
    ap, aa, pp, an = (slice(k * b, (k + 1) * b) for k in range(4))
    assert not mask[torch.arange(b), torch.arange(b)].any()  # labelled positives
    assert mask[0, ap][1] and mask[1, ap][0]  # copies of the positive
    assert mask[0, ap][2] and mask[2, ap][0]  # the positive of the same query in another row
    assert mask[0, aa][2] and mask[2, aa][0]  # the same anchor text
    assert mask[torch.arange(b), aa.start + torch.arange(b)].all()  # the anchor itself
    assert mask[torch.arange(b), pp.start + torch.arange(b)].all()  # the positive itself
    assert mask[0, an][3] and mask[1, an][3] and mask[2, an][3]  # negative == their positive
    # nothing else (the guide masks nothing): per row, the text-decided entries of ap, aa, pp, an
    # row 0 (A, P; known positives of A: P, p2): 2 + 2 + 3 + 1; row 1 (a1, P): 1 + 1 + 2 + 1;
    # row 2 (A, p2): 2 + 2 + 3 + 1; rows 3 and 4: only the anchor and positive themselves
    assert int(mask.sum()) == 8 + 5 + 8 + 2 + 2
    with torch.no_grad():
        assert torch.isfinite(loss(features, None))


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_gradients_flow_through_the_student_only(
    tiny_bi_encoder, tiny_bert, guide_bi_encoder, kind
):
    from sentence_transformers import SentenceTransformer

    from winnow.training import RerankerGuidedGISTLoss

    model = SentenceTransformer(tiny_bi_encoder)
    guide = winnow.load_reranker(tiny_bert if kind == "cross-encoder" else guide_bi_encoder, kind)
    loss = RerankerGuidedGISTLoss(model, guide, preset="balanced", min_top_k=4)
    value = loss(_features(model, _rows(8)), None)
    value.backward()
    # every weight the embedding reads gets a gradient (BERT's pooler head is unused by mean pooling)
    grads = [p.grad for n, p in model.named_parameters() if "pooler" not in n]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    guide.load()
    assert all(p.grad is None for p in guide.model.parameters())
    assert loss.total_stats.batches == 1 and loss.last_stats.guide_pairs > 0


def test_cached_mini_batches_equal_the_uncached_loss(tiny_bi_encoder, tiny_bert):
    from sentence_transformers import SentenceTransformer

    from winnow.training import RerankerGuidedGISTLoss

    guide = winnow.load_reranker(tiny_bert)
    rows = _rows(10, negatives=2)
    results = []
    for mini_batch_size in (None, 3):
        model = SentenceTransformer(tiny_bi_encoder)
        model.eval()
        loss = RerankerGuidedGISTLoss(
            model, guide, preset="conservative", min_top_k=6, mini_batch_size=mini_batch_size
        )
        value = loss(_features(model, rows), None)
        value.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((float(value.detach()), grads, loss.last_stats))
    (plain, plain_grads, plain_stats), (cached, cached_grads, cached_stats) = results
    assert abs(plain - cached) < 1e-5
    assert len(plain_grads) == len(cached_grads) > 0
    for a, b in zip(plain_grads, cached_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert plain_stats.guide_pairs == cached_stats.guide_pairs


def test_disk_cache_survives_a_new_loss(student, tiny_bert, tmp_path):
    from winnow.training import GuideScoreCache, RerankerGuidedGISTLoss

    guide = winnow.load_reranker(tiny_bert)
    rows = _rows(6)
    first = RerankerGuidedGISTLoss(
        student, guide, cache=GuideScoreCache(path=tmp_path / "scores.sqlite")
    )
    with torch.no_grad():
        a = first(_features(student, rows), None)
    first.cache.close()
    second = RerankerGuidedGISTLoss(
        student, guide, cache=GuideScoreCache(path=tmp_path / "scores.sqlite")
    )
    with torch.no_grad():
        b = second(_features(student, rows), None)
    assert float(a) == float(b)
    assert second.last_stats.reranker_calls == 0
    assert second.last_stats.cache_hits == first.last_stats.reranker_calls > 0


def test_bounded_memory_cache_evicts_oldest():
    from winnow.training import GuideScoreCache

    cache = GuideScoreCache(max_entries=2)
    keys = [cache._key("q", d) for d in ("a", "b", "c")]
    cache.store(keys, np.array([1.0, 2.0, 3.0]))
    assert len(cache) == 2 and cache.lookup(keys) == {1: 2.0, 2: 3.0}


def test_bad_settings_and_inputs_are_clear_errors(student, tiny_bert):
    from winnow.training import RerankerGuidedGISTLoss

    guide = winnow.load_reranker(tiny_bert)
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'.*balanced"):
        RerankerGuidedGISTLoss(student, guide, preset="fast")
    with pytest.raises(ConfigError, match="similarity_threshold must be in"):
        RerankerGuidedGISTLoss(student, guide, similarity_threshold=2.0)
    with pytest.raises(ConfigError, match=r"min_top_k .* must not exceed max_candidates"):
        RerankerGuidedGISTLoss(student, guide, min_top_k=50, max_candidates=10)
    with pytest.raises(ConfigError, match="margin_strategy must be one of"):
        RerankerGuidedGISTLoss(student, guide, margin_strategy="percent")
    with pytest.raises(ConfigError, match="guide must be a winnow reranker"):
        RerankerGuidedGISTLoss(student, student)
    loss = RerankerGuidedGISTLoss(student, guide)
    with pytest.raises(InputError, match="needs \\(anchor, positive"):
        loss(_features(student, [{"anchor": "wing lift"}]), None)


def test_import_winnow_training_stays_light():
    import subprocess
    import sys

    code = "import sys, winnow.training; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_raw_texts_the_guide_reads_decoded_tokens(student, caplog):
    from winnow.training import RerankerGuidedGISTLoss

    rows = _rows(4)
    seen: list[tuple[str, str]] = []

    class Recorder(TableGuide):
        def score_pairs(self, pairs):
            seen.extend(pairs)
            return np.zeros(len(pairs), dtype=np.float32)

    loss = RerankerGuidedGISTLoss(student, Recorder({}), preset="unfiltered")
    with caplog.at_level("WARNING", logger="winnow.training.gist"), torch.no_grad():
        value = loss(_strip(_features(student, rows)), None)
    assert torch.isfinite(value)
    assert "no raw texts" in caplog.text
    decoded = student.tokenizer.batch_decode(
        _strip(_features(student, rows))[0]["input_ids"], skip_special_tokens=True
    )
    assert {q for q, _ in seen} >= set(decoded)
