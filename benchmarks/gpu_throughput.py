"""GPU throughput: winnow's engine against sentence-transformers fp16 on the same pairs, side by side.

Three parts, each measured in one process on the same inputs:

* ``xlmr-large``: an XLM-R-large-sized cross-encoder (``XLMRobertaForSequenceClassification``, 24
  layers, hidden 1024, 16 heads, feed-forward 4096) built from a config with random weights (speed
  only: no download), with all-MiniLM-L6-v2's WordPiece tokenizer and a vocabulary of its size, at
  ``--max-length`` (256) tokens;
* ``minilm``: all-MiniLM-L6-v2's encoder with a fresh one-logit head (as rerank_throughput.py);
* ``bi-encoder``: all-MiniLM-L6-v2 encoding the pairs' distinct queries and documents, winnow's
  ``encode`` against ``SentenceTransformer.encode``.

Cross-encoder modes on CUDA: ``st-fp16-bN`` (``CrossEncoder.predict`` with float16 weights at each
``--st-batch-sizes``), ``winnow-bf16`` (the default: bfloat16, SDPA, look-ahead on), ``winnow-fp16`` and
``winnow-bf16-serial`` (look-ahead off). On the CPU the same in float32 (``st-fp32-bN``,
``winnow-fp32``, ``winnow-fp32-overlap``). For each: pairs/s (median of ``--repeats`` timed passes
after a warm-up), the ratio to sentence-transformers' best batch size, Spearman and max |diff|
against it, padding efficiency, batches prepared ahead, model TFLOP/s (full-model FLOPs from the
config and each pair's real token count) and, on CUDA, % of ``--peak-tflops`` (989: H200 dense bf16)
and peak GPU memory.

Pairs: the bundle's Cranfield pairs (``--pairs-file``, written by ``benchmarks/gpu.sh prepare``),
else Cranfield queries x BM25 top 100 from ``--data-dir``, else synthetic pairs that fill
``--max-length`` exactly; the output's ``pairs_source`` says which.

    python benchmarks/gpu_throughput.py [--device cuda] [--pairs 8192] [--xlmr-pairs 4096]
        [--parts xlmr-large,minilm,bi-encoder] [--budget-s 330] [--json]
    python benchmarks/gpu_throughput.py --device cpu --pairs 64 --xlmr-layers 2   # tiny CPU run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PARTS = ("xlmr-large", "minilm", "bi-encoder")


# -- inputs --------------------------------------------------------------------------------------
def load_pairs(args) -> tuple[list[str], list[str], list[tuple[int, int]], str]:
    """(queries, documents, pair indices, source) of the pairs to score."""
    if args.pairs_file and Path(args.pairs_file).is_file():
        data = json.loads(Path(args.pairs_file).read_text())
        return data["queries"], data["documents"], [tuple(p) for p in data["pairs"]], data["source"]
    try:
        return (*cranfield_pairs(Path(args.data_dir), args.queries, args.depth), "cranfield")
    except Exception as exc:  # no data folder, or no BM25 package on this machine
        print(f"real pairs unavailable ({type(exc).__name__}: {exc}); synthetic", file=sys.stderr)
    return (*synthetic_pairs(args.max_length), f"synthetic (fills {args.max_length} tokens)")


def cranfield_pairs(data_dir: Path, n_queries: int, depth: int):
    """Cranfield queries x their BM25 top ``depth`` documents, as indices into two text lists."""
    from winnow.data import load_dataset
    from winnow.retrieval import BM25Index

    ds = load_dataset("cranfield", data_dir=str(data_dir))
    qids = sorted(ds.queries, key=int)[:n_queries]
    run = BM25Index().index(ds.corpus).search({q: ds.queries[q] for q in qids}, top_k=depth)
    doc_ids = list(ds.corpus)
    doc_pos = {d: i for i, d in enumerate(doc_ids)}
    pairs = [
        (qi, doc_pos[d])
        for qi, q in enumerate(qids)
        for d, _ in sorted(run[q].items(), key=lambda kv: -kv[1])
    ]
    return [ds.queries[q] for q in qids], [ds.corpus[d].full_text for d in doc_ids], pairs


def synthetic_pairs(max_length: int, n_queries: int = 32, n_docs: int = 512):
    """Word-salad queries (12 words) and documents long enough to be cut at ``max_length``."""
    from winnow.testing import _WORDS

    rng = np.random.default_rng(0)
    words = np.array(_WORDS)
    queries = [" ".join(rng.choice(words, 12)) for _ in range(n_queries)]
    documents = [" ".join(rng.choice(words, 2 * max_length)) for _ in range(n_docs)]
    return queries, documents, [(i % n_queries, i) for i in range(n_docs)]


def take(pairs: list, n: int) -> list:
    """The first ``n`` pairs, cycling through them when there are fewer."""
    return [pairs[i % len(pairs)] for i in range(n)]


# -- models --------------------------------------------------------------------------------------
def build_xlmr_large(path: Path, layers: int, seed: int = 0) -> Path:
    """A random XLM-R-large-sized classifier with all-MiniLM-L6-v2's tokenizer, saved in float16."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    from winnow.rerankers.hub import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=514,
        type_vocab_size=2,  # the WordPiece tokenizer gives a pair's second text type 1
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        architectures=["XLMRobertaForSequenceClassification"],
    )
    XLMRobertaForSequenceClassification(config).half().eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def model_flops(config, lengths) -> float:
    """Forward FLOPs of a BERT-style encoder over sequences of ``lengths`` tokens (2 per
    multiply-add: the dense layers, the attention products and a head of one hidden-size layer)."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    per_layer = 2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h
    return float((layers * per_layer + 2 * h * h).sum())


# -- timing --------------------------------------------------------------------------------------
class Timer:
    """Median of timed passes after a warm-up, with peak GPU memory on CUDA."""

    def __init__(self, device: str, repeats: int):
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.repeats = repeats

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def run(self, fn, warmup) -> dict:
        warmup()
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        seconds, out = [], None
        for _ in range(self.repeats):
            start = time.perf_counter()
            out = fn()
            self.sync()
            seconds.append(time.perf_counter() - start)
        result = {
            "seconds_median": statistics.median(seconds),
            "seconds_min": min(seconds),
            "seconds_max": max(seconds),
            "output": out,
        }
        if self.cuda:
            result["peak_gpu_mib"] = self.torch.cuda.max_memory_allocated() / 2**20
        return result


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cross_encoder_part(name, path, pairs, args, timer, deadline) -> dict:
    import torch

    import winnow
    from winnow.rerankers._cuda import attention_implementation
    from winnow.rerankers._first_token import _encoder_layers
    from winnow.rerankers._torch import from_pretrained_kwargs

    cuda = args.device.startswith("cuda")
    half = "float16" if cuda else "float32"
    st_tag = "st-fp16" if cuda else "st-fp32"
    part: dict = {"pairs": len(pairs), "max_length": args.max_length, "modes": {}}
    warm = pairs[: min(len(pairs), 256)]

    st_scores = None
    try:
        from sentence_transformers import CrossEncoder

        kwargs = {"model_kwargs": from_pretrained_kwargs(half)}
        st = CrossEncoder(
            path,
            device=args.device,
            max_length=args.max_length,
            activation_fn=torch.nn.Identity(),
            **kwargs,
        )
        for b in args.st_batch_sizes:
            if time.monotonic() > deadline:
                part["modes"][f"{st_tag}-b{b}"] = {"skipped": "time budget spent"}
                continue
            r = timer.run(
                lambda st=st, b=b: st.predict(pairs, batch_size=b, show_progress_bar=False),
                lambda st=st, b=b: st.predict(warm, batch_size=b, show_progress_bar=False),
            )
            scores = np.asarray(r.pop("output"), dtype=np.float32)
            st_scores = scores if st_scores is None else st_scores
            part["modes"][f"{st_tag}-b{b}"] = {**r, "pairs_per_s": len(pairs) / r["seconds_median"]}
        del st
    except Exception as exc:  # a missing or incompatible sentence-transformers: say so, go on
        part["st_error"] = f"{type(exc).__name__}: {exc}"

    modes = (
        [
            ("winnow-bf16", "bfloat16", None),
            ("winnow-fp16", "float16", None),
            ("winnow-bf16-serial", "bfloat16", False),
        ]
        if cuda
        else [("winnow-fp32", "float32", None), ("winnow-fp32-overlap", "float32", True)]
    )
    flops = None
    for label, dtype, overlap in modes:
        if time.monotonic() > deadline:
            part["modes"][label] = {"skipped": "time budget spent"}
            continue
        options = {} if overlap is None else {"overlap": overlap}
        if args.max_tokens:
            options["max_tokens"] = args.max_tokens
        rr = winnow.load_reranker(
            path,
            "cross-encoder",
            device=args.device,
            dtype=dtype,
            max_length=args.max_length,
            **options,
        )
        rr.load()
        if flops is None:
            _, _, lengths, _ = rr.pairs.encode_pairs(pairs)
            flops = model_flops(rr.model.config, lengths)
            part["mean_tokens"] = float(lengths.mean())
            part["model_gflop_per_pair"] = flops / len(pairs) / 1e9
        r = timer.run(lambda rr=rr: rr.score_pairs(pairs), lambda rr=rr: rr.score_pairs(warm))
        scores = r.pop("output")
        stats = rr.last_stats
        last = _encoder_layers(rr.model)[-1]
        entry = {
            **r,
            "pairs_per_s": len(pairs) / r["seconds_median"],
            "dtype": rr.config.dtype,
            "attention": attention_implementation(rr.model),
            "first_token_layer": type(last).__name__ == "FirstTokenLayer",
            "padding_efficiency": stats.padding_efficiency,
            "batches": stats.batches,
            "prepared_ahead": stats.prepared_ahead,
            "model_tflops": flops / r["seconds_median"] / 1e12,
        }
        if cuda:
            entry["pct_of_peak"] = 100 * entry["model_tflops"] / args.peak_tflops
        if st_scores is not None:
            entry["spearman_vs_st"] = spearman(scores, st_scores)
            entry["max_abs_diff_vs_st"] = float(np.abs(scores - st_scores).max())
        part["modes"][label] = entry
        winnow.unload(path)
    add_ratios(part, st_tag)
    return part


def bi_encoder_part(path, texts, args, timer, deadline) -> dict:
    import winnow
    from winnow.rerankers._cuda import attention_implementation
    from winnow.rerankers._torch import from_pretrained_kwargs

    cuda = args.device.startswith("cuda")
    half = "float16" if cuda else "float32"
    st_tag = "st-fp16" if cuda else "st-fp32"
    part: dict = {"texts": len(texts), "modes": {}}
    warm = texts[: min(len(texts), 256)]
    reference = None
    try:
        from sentence_transformers import SentenceTransformer

        kwargs = {"model_kwargs": from_pretrained_kwargs(half)}
        st = SentenceTransformer(path, device=args.device, **kwargs).eval()
        for b in args.st_batch_sizes:
            if time.monotonic() > deadline:
                part["modes"][f"{st_tag}-b{b}"] = {"skipped": "time budget spent"}
                continue

            def encode(t, st=st, b=b):
                return st.encode(
                    t, batch_size=b, normalize_embeddings=True, show_progress_bar=False
                )

            r = timer.run(lambda encode=encode: encode(texts), lambda encode=encode: encode(warm))
            out = np.asarray(r.pop("output"), dtype=np.float32)
            reference = out if reference is None else reference
            part["modes"][f"{st_tag}-b{b}"] = {**r, "texts_per_s": len(texts) / r["seconds_median"]}
        del st
    except Exception as exc:
        part["st_error"] = f"{type(exc).__name__}: {exc}"

    modes = (
        [("winnow-bf16", "bfloat16"), ("winnow-fp16", "float16")]
        if cuda
        else [("winnow-fp32", "float32")]
    )
    flops = None
    for label, dtype in modes:
        if time.monotonic() > deadline:
            part["modes"][label] = {"skipped": "time budget spent"}
            continue
        options = {"max_tokens": args.max_tokens} if args.max_tokens else {}
        bi = winnow.load_reranker(
            path, "bi-encoder", device=args.device, dtype=dtype, memo_mb=0, **options
        )
        bi.load()
        if flops is None:
            lengths = np.minimum(bi.token_lengths(texts), bi._max_length)
            flops = model_flops(bi.model.model.config, lengths) if bi.uses_engine else None
            part["mean_tokens"] = float(lengths.mean())
        r = timer.run(lambda bi=bi: bi.encode(texts), lambda bi=bi: bi.encode(warm))
        out = r.pop("output")
        stats = bi.last_stats
        entry = {
            **r,
            "texts_per_s": len(texts) / r["seconds_median"],
            "engine": bool(bi.uses_engine),
            "attention": attention_implementation(getattr(bi.model, "model", None)),
            "padding_efficiency": stats.padding_efficiency,
            "prepared_ahead": stats.prepared_ahead,
        }
        if flops is not None:
            entry["model_tflops"] = flops / r["seconds_median"] / 1e12
            if cuda:
                entry["pct_of_peak"] = 100 * entry["model_tflops"] / args.peak_tflops
        if reference is not None:
            entry["cosine_min_vs_st"] = float((out * reference).sum(1).min())
        part["modes"][label] = entry
        winnow.unload(path)
    add_ratios(part, st_tag, key="texts_per_s")
    return part


def add_ratios(part: dict, st_tag: str, key: str = "pairs_per_s") -> None:
    """Each mode's speed over sentence-transformers' best batch size in the same run."""
    st = [m[key] for n, m in part["modes"].items() if n.startswith(st_tag) and key in m]
    if not st:
        return
    part["st_best_" + key] = max(st)
    for m in part["modes"].values():
        if key in m:
            m["ratio_vs_st_best"] = m[key] / max(st)


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--pairs", type=int, default=8192, help="pairs for minilm (and texts cap)")
    parser.add_argument(
        "--xlmr-pairs", type=int, default=None, help="pairs for xlmr-large (min(--pairs, 4096))"
    )
    parser.add_argument("--xlmr-layers", type=int, default=24, help="24 = XLM-R-large")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per pair")
    parser.add_argument("--max-tokens", type=int, default=None, help="engine token budget")
    parser.add_argument("--st-batch-sizes", default="32,128")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument("--budget-s", type=float, default=330, help="skip modes after this")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H200 dense bf16")
    parser.add_argument("--pairs-file", default=None, help="pairs JSON (gpu.sh prepare)")
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    parser.add_argument("--queries", type=int, default=80, help="Cranfield queries")
    parser.add_argument("--depth", type=int, default=100, help="BM25 documents per query")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", default=None, help="also write the JSON here after each part")
    parser.add_argument("--summarize", metavar="JSON", help="print the table of a saved report")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summary(json.loads(Path(args.summarize).read_text())))
        return 0
    args.st_batch_sizes = [int(b) for b in args.st_batch_sizes.split(",") if b]
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")

    import torch
    import transformers

    from winnow._fs import write_json_atomic
    from winnow.rerankers.devices import resolve_device
    from winnow.rerankers.hub import resolve_model_path
    from winnow.testing import build_minilm_cross_encoder

    start = time.monotonic()
    deadline = start + args.budget_s
    args.device = resolve_device(args.device)
    queries, documents, index, source = load_pairs(args)
    all_pairs = [(queries[q], documents[d]) for q, d in index]
    report: dict = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pairs_source": source,
        "peak_tflops": args.peak_tflops if args.device.startswith("cuda") else None,
        "parts": {},
    }
    timer = Timer(args.device, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            if time.monotonic() > deadline:
                report["parts"][part] = {"skipped": "time budget spent"}
                continue
            try:
                if part == "xlmr-large":
                    path = build_xlmr_large(Path(tmp) / part, args.xlmr_layers)
                    pairs = take(all_pairs, args.xlmr_pairs or min(args.pairs, 4096))
                    result = cross_encoder_part(part, str(path), pairs, args, timer, deadline)
                    result["layers"] = args.xlmr_layers
                elif part == "minilm":
                    path = build_minilm_cross_encoder(Path(tmp) / part)
                    pairs = take(all_pairs, args.pairs)
                    result = cross_encoder_part(part, str(path), pairs, args, timer, deadline)
                else:
                    used = sorted({d for _, d in index})
                    texts = [documents[d] for d in used] + list(queries)
                    texts = texts[: args.pairs]
                    model = resolve_model_path(MINILM)
                    result = bi_encoder_part(model, texts, args, timer, deadline)
            except Exception as exc:  # one loan, one run: report it and measure the next part
                traceback.print_exc()
                result = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
            report["parts"][part] = result
            report["seconds"] = time.monotonic() - start
            if args.out:  # what is done survives a later part's crash or a kill
                write_json_atomic(args.out, report)
    report["seconds"] = time.monotonic() - start
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summary(report))
    failed = [p for p, r in report["parts"].items() if r.get("skipped", "").startswith("failed")]
    return 1 if failed else 0


def summary(report: dict) -> str:
    """A short table of a report (also used by benchmarks/gpu.sh on the JSON file)."""
    lines = [
        f"{report['device']} {report.get('gpu') or ''} torch {report['torch']} "
        f"transformers {report['transformers']}; pairs: {report['pairs_source']}"
    ]
    for name, part in report["parts"].items():
        if "skipped" in part:
            lines.append(f"\n{name}: skipped ({part['skipped']})")
            continue
        size = part.get("pairs", part.get("texts"))
        mean = part.get("mean_tokens")
        lines.append(
            f"\n{name}: {size} items"
            + ("" if mean is None else f", mean {mean:.0f} tokens")
            + (f"; sentence-transformers failed: {part['st_error']}" if "st_error" in part else "")
        )
        lines.append(
            f"  {'mode':<20}{'items/s':>10}{'vs ST':>8}{'TFLOP/s':>9}{'% peak':>8}"
            f"{'agree':>10}{'padding':>9}{'attn':>7}"
        )
        for mode, m in part["modes"].items():
            if "skipped" in m:
                lines.append(f"  {mode:<20} skipped ({m['skipped']})")
                continue
            rate = m.get("pairs_per_s", m.get("texts_per_s"))
            agree = m.get("spearman_vs_st", m.get("cosine_min_vs_st"))
            lines.append(
                f"  {mode:<20}{rate:>10.1f}{_fmt(m.get('ratio_vs_st_best'), '{:.2f}x'):>8}"
                f"{_fmt(m.get('model_tflops'), '{:.3g}'):>9}{_fmt(m.get('pct_of_peak'), '{:.1f}'):>8}"
                f"{_fmt(agree, '{:.5f}'):>10}{_fmt(m.get('padding_efficiency'), '{:.3f}'):>9}"
                f"{(m.get('attention') or '')[:6]:>7}"
            )
    lines.append(f"\n{report.get('seconds', 0):.0f} s in all")
    return "\n".join(lines)


def _fmt(value, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


if __name__ == "__main__":
    sys.exit(main())
