"""``winnow tune``: grid search of a system's parameters with k-fold cross-validation over queries.

Like PyTerrier's ``KFoldGridSearch``: the judged queries are split into ``folds`` (a seeded
shuffle, then round robin); for each fold the grid point with the best mean metric on the *other*
folds is chosen and the fold's own queries are scored with it, so the cross-validated figure
never saw its own queries. It is tested (paired t-test) against the untuned system (the defaults)
on the same queries. The saved file holds the grid point best on *all* queries, for use as a
system: ``winnow eval --systems tuned:FILE`` (then it has seen the queries it is evaluated on:
report the cross-validated figure, not that one).

Every system is run once per grid point over all queries in one context, so indexes are shared
between points that do not change them (RM3 settings reuse the BM25 index).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError

FORMAT = "winnow-tune/1"


def _bm25(p: Mapping[str, Any]):
    from winnow.pipeline import BM25

    return BM25(k1=float(p["k1"]), b=float(p["b"]))


def _rm3(method: str):
    def build(p: Mapping[str, Any]):
        from winnow.pipeline import QueryExpansion

        bm25 = _bm25(p)
        extra = (
            {"original_query_weight": float(p["original_query_weight"])} if method == "rm3" else {}
        )
        return bm25 >> QueryExpansion(
            method, fb_docs=int(p["fb_docs"]), fb_terms=int(p["fb_terms"]), bm25=bm25, **extra
        )

    return build


def _dense_prf(p: Mapping[str, Any]):
    from winnow.pipeline import Dense, Rocchio

    return Dense() >> Rocchio(k=int(p["k"]), alpha=float(p["alpha"]), beta=float(p["beta"]))


def _hybrid(p: Mapping[str, Any]):
    from winnow.pipeline import Dense, ScoreFusion

    return (_rm3("bo1")(p) % 1000 | Dense() % 1000) >> ScoreFusion("combsum")


def _hybrid_v1(p: Mapping[str, Any]):
    from winnow.pipeline import RRF, Dense

    return (_bm25(p) % 1000 | Dense() % 1000) >> RRF(k=int(p["rrf_k"]))


@dataclass(frozen=True)
class Tunable:
    defaults: dict[str, Any]
    build: Callable[[Mapping[str, Any]], Any]


BM25_DEFAULTS = {"k1": 1.5, "b": 0.75}
#: The systems ``winnow tune`` knows, their parameters and defaults (the untuned system).
TUNABLE: dict[str, Tunable] = {
    "bm25": Tunable(BM25_DEFAULTS, _bm25),
    "bm25+rm3": Tunable(
        {**BM25_DEFAULTS, "fb_docs": 10, "fb_terms": 10, "original_query_weight": 0.5},
        _rm3("rm3"),
    ),
    "bm25+bo1": Tunable({**BM25_DEFAULTS, "fb_docs": 3, "fb_terms": 10}, _rm3("bo1")),
    "dense+prf": Tunable({"k": 5, "alpha": 0.4, "beta": 0.6}, _dense_prf),
    "hybrid": Tunable({**BM25_DEFAULTS, "fb_docs": 3, "fb_terms": 10}, _hybrid),
    "hybrid-v1": Tunable({**BM25_DEFAULTS, "rrf_k": 60}, _hybrid_v1),
}


def _value(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"grid value {text!r} is not a number") from None


def parse_grid(system: str, text: str) -> dict[str, list[Any]]:
    """``"k1=0.9,1.2;b=0.4,0.75"`` -> ``{"k1": [0.9, 1.2], "b": [0.4, 0.75]}`` (names checked)."""
    if system not in TUNABLE:
        raise ConfigError(f"winnow tune knows {', '.join(TUNABLE)}; got {system!r}")
    valid = TUNABLE[system].defaults
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError(f"grid entry {part!r}: write NAME=V1,V2,...")
        if name not in valid:
            raise ConfigError(
                f"{system} has no parameter {name!r}; its parameters: {', '.join(valid)}"
            )
        grid[name] = [_value(v.strip()) for v in values.split(",")]
    if not grid:
        raise ConfigError("the grid is empty; e.g. --grid 'k1=0.9,1.2,1.5;b=0.4,0.75'")
    return grid


def folds_of(query_ids: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """A seeded shuffle of ``query_ids`` dealt round robin into ``folds`` groups."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(query_ids):
        raise ConfigError(
            f"folds must be between 2 and {len(query_ids)} (the queries), got {folds}"
        )
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    return [ids[i::folds] for i in range(folds)]


@dataclass
class TuneResult:
    system: str
    metric: str
    defaults: dict[str, Any]
    best: dict[str, Any]  # best on all queries
    folds: list[dict[str, Any]] = field(default_factory=list)
    untuned: float = 0.0
    cross_validated: float = 0.0
    p_value: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.__dict__}


def tune(
    dataset,
    system: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    metric: str = "nDCG@10",
    folds: int = 5,
    seed: int = 0,
    context=None,
) -> TuneResult:
    """Grid search with ``folds``-fold cross-validation over the judged queries (module docstring)."""
    from winnow.evaluation.experiment import select_queries
    from winnow.evaluation.metrics import Evaluator
    from winnow.evaluation.significance import paired_ttest
    from winnow.pipeline import Context

    spec = TUNABLE[system]
    ctx = context or Context(dataset)
    queries = select_queries(dataset)
    evaluator = Evaluator({q: r for q, r in dataset.qrels.items() if q in queries}, [metric])
    qids = evaluator.query_ids
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]

    def per_query(params: Mapping[str, Any]) -> dict[str, float]:
        run = spec.build({**spec.defaults, **params}).transform(queries, None, ctx)
        return evaluator.per_query(run)[evaluator.metrics[0]]

    scores = [per_query(p) for p in points]
    base = per_query({})

    def best_on(ids: Sequence[str]) -> int:
        means = [sum(s[q] for q in ids) / len(ids) for s in scores]
        return max(range(len(points)), key=lambda i: (means[i], -i))  # first of equals

    cv: dict[str, float] = {}
    result = TuneResult(system, evaluator.metrics[0], dict(spec.defaults), {})
    for i, test in enumerate(folds_of(qids, folds, seed)):
        train = [q for q in qids if q not in set(test)]
        chosen = best_on(train)
        for q in test:
            cv[q] = scores[chosen][q]
        result.folds.append(
            {
                "fold": i + 1,
                "test_queries": len(test),
                "params": points[chosen],
                "train": sum(scores[chosen][q] for q in train) / len(train),
                "test": sum(cv[q] for q in test) / len(test),
            }
        )
    result.best = {**spec.defaults, **points[best_on(qids)]}
    result.untuned = sum(base.values()) / len(qids)
    result.cross_validated = sum(cv.values()) / len(qids)
    result.p_value = paired_ttest([cv[q] for q in qids], [base[q] for q in qids])[1]
    return result


def load_tuned(path: str | Path):
    """The stage a ``winnow tune --save`` file describes (``tuned:FILE`` in a system spec)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"tuned:{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"tuned:{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"tuned:{path}: not a file written by winnow tune --save ({FORMAT})")
    system, best = data.get("system"), data.get("best")
    if system not in TUNABLE or not isinstance(best, dict):
        raise ConfigError(f"tuned:{path}: unknown system {system!r} or no 'best' parameters")
    unknown = sorted(set(best) - set(TUNABLE[system].defaults))
    if unknown:
        raise ConfigError(f"tuned:{path}: {system} has no parameter(s) {', '.join(unknown)}")
    return TUNABLE[system].build({**TUNABLE[system].defaults, **best})


def format_result(r: TuneResult) -> str:
    lines = [f"{r.system}: {len(r.folds)}-fold cross-validated {r.metric}"]
    for f in r.folds:
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items())
        lines.append(
            f"  fold {f['fold']} ({f['test_queries']} queries): {params}  "
            f"train {f['train']:.4f}  test {f['test']:.4f}"
        )
    best = ", ".join(f"{k}={v}" for k, v in r.best.items())
    lines.append(
        f"untuned {r.metric} {r.untuned:.4f}; cross-validated {r.cross_validated:.4f} "
        f"(paired t-test p={r.p_value:.4f})"
    )
    lines.append(f"best on all queries: {best}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    import os

    from winnow._collection_args import DEFAULT_CACHE

    p = sub.add_parser(
        "tune",
        help="grid search of a system's parameters with k-fold cross-validation over queries",
        description=__doc__.split("\n\n")[1]
        + "\n\nSystems and their parameters (defaults): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in t.defaults.items())
            for name, t in TUNABLE.items()
        ),
    )
    p.add_argument("--dataset", required=True, help="collection name or BEIR folder")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("WINNOW_DATA"),
        help="folder holding collections by name (default: $WINNOW_DATA)",
    )
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help=f"default: {DEFAULT_CACHE}")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--system", required=True, choices=list(TUNABLE), help="the system to tune")
    p.add_argument("--grid", required=True, help="NAME=V1,V2,...;NAME=... e.g. 'k1=0.9,1.2;b=0.4'")
    p.add_argument("--metric", default="nDCG@10", help="metric to maximise (default: nDCG@10)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query shuffle (default: 0)")
    p.add_argument("--save", default=None, help="write the result (JSON) for --systems tuned:FILE")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from winnow._collection_args import cache_folder as _cache
    from winnow._collection_args import load_collection as _load
    from winnow._collection_args import progress_wanted as _progress
    from winnow._fs import write_json_atomic
    from winnow.pipeline import Context

    grid = parse_grid(args.system, args.grid)
    dataset = _load(args)
    ctx = Context(dataset, cache_dir=_cache(args), progress=_progress(args))
    result = tune(
        dataset,
        args.system,
        grid,
        metric=args.metric,
        folds=args.folds,
        seed=args.seed,
        context=ctx,
    )
    print(format_result(result))
    if args.save:
        write_json_atomic(Path(args.save).expanduser(), result.to_dict())
        print(f"wrote {args.save}")
    return 0
