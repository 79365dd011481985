"""Pointwise LLM reranking: winnow's path against a naive per-pair transformers loop, side by side.

Both score the same (query, document) pairs with the same random Qwen2-architecture causal LM
(realistic shape: hidden 512, 4 layers, 32k vocabulary by default; random weights: speed only) and
the same Qwen3-Reranker prompt. The naive loop is what people write from a model card: tokenise the
prompt, ``model(**inputs).logits[0, -1]``, take yes - no, one pair at a time. winnow batches
length-sorted pairs with left padding and computes only the two LM-head rows at the last position.

    python benchmarks/llm_rerank.py --pairs 64 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time


def make_pairs(n_pairs: int, n_queries: int, seed: int = 0) -> list[tuple[str, str]]:
    from winnow.testing import sample_corpus

    rng = random.Random(seed)
    sentences = sample_corpus(2000, seed=seed)
    queries = [" ".join(s.split()[:6]) for s in sentences[:n_queries]]
    pairs = []
    for i in range(n_pairs):
        doc = " ".join(rng.choice(sentences) for _ in range(rng.randint(3, 8)))
        pairs.append((queries[i % n_queries], doc))
    return pairs


def naive_scores(path: str, template, pairs, device: str):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    out = []
    with torch.inference_mode():
        for q, d in pairs:
            inputs = tok(template.render(q, d), return_tensors="pt").to(device)
            logits = model(**inputs).logits[0, -1].float()
            out.append(float(logits[yes] - logits[no]))
    return np.array(out, dtype=np.float32)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=8192, help="winnow's token budget")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs (best is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import winnow
    from winnow.testing import build_tiny_qwen2

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs, args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(
            build_tiny_qwen2(
                f"{tmp}/qwen2",
                hidden_size=args.hidden,
                num_layers=args.layers,
                vocab_size=args.vocab,
                max_length=2048,
            )
        )
        reranker = winnow.load_reranker(
            path, "llm-pointwise", device=args.device, dtype="float32", max_tokens=args.max_tokens
        )
        reranker.warmup()
        naive_scores(path, reranker.template, pairs[:2], args.device)  # warm the naive path too

        def best(fn):
            times, result = [], None
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - started)
            return min(times), result

        t_winnow, ours = best(lambda: reranker.score_pairs(pairs))
        t_naive, theirs = best(lambda: naive_scores(path, reranker.template, pairs, args.device))
        tokens = reranker.score_pairs_detailed(pairs).num_tokens
    result = {
        "pairs": len(pairs),
        "mean_prompt_tokens": float(np.mean(tokens)),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "winnow_pairs_per_s": len(pairs) / t_winnow,
        "naive_pairs_per_s": len(pairs) / t_naive,
        "speedup": t_naive / t_winnow,
        "max_abs_score_diff": float(np.max(np.abs(ours - theirs))),
        "batches": reranker.last_stats.batches,
        "padding_efficiency": reranker.last_stats.padding_efficiency,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
