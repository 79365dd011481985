"""``winnow data``: list, fetch and check datasets from the command line."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter


def _add_locations(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder(s) holding datasets by name, joined by the path separator "
        "(default: $WINNOW_DATA)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="download cache (default: ~/.cache/winnow/datasets)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="list, download and validate BEIR-format datasets",
        description="List, download and validate BEIR-format datasets.",
    )
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    ls = cmds.add_parser("list", help="datasets found locally and public ones known by name")
    _add_locations(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)

    fetch = cmds.add_parser("fetch", help="download a public BEIR dataset into the cache")
    fetch.add_argument(
        "name", help="public BEIR name (scifact, nfcorpus, ...) or any name with --url"
    )
    fetch.add_argument("--url", default=None, help="archive address (default: the BEIR address)")
    fetch.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    fetch.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    fetch.add_argument(
        "--cache-dir", default=None, help="download cache (default: ~/.cache/winnow/datasets)"
    )
    fetch.set_defaults(func=run_fetch)

    check = cmds.add_parser("check", help="load a dataset, validating every line, and summarise it")
    check.add_argument("dataset", help="folder, name in --data-dir, or cached/public name")
    check.add_argument(
        "--split",
        default="test",
        help="qrels split, or a split spec such as train@0.6:seed0 (default: test)",
    )
    check.add_argument(
        "--download", action="store_true", help="download a public dataset if needed"
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    _add_locations(check)
    check.set_defaults(func=run_check)

    split = cmds.add_parser(
        "split",
        help="split a dataset's judged queries into train/dev/test by seeded query-id hash",
        description="Split the queries judged in --source into train / (dev) / test parts by a "
        "seeded hash of the query id, and print the split specs (train@0.6:seed0 ...) that "
        "--split of 'winnow eval', 'winnow mine' and 'winnow train' accept, with their counts. "
        "Nothing is written into the dataset folder: the corpus and qrels stay as they are.",
    )
    split.add_argument("dataset", help="folder, name in --data-dir, or cached/public name")
    split.add_argument(
        "--train", required=True, help="fraction of judged queries for train (0 < F < 1)"
    )
    split.add_argument("--dev", default=None, help="fraction for dev (default: no dev part)")
    split.add_argument("--seed", type=int, default=0, help="seed of the hash order (default: 0)")
    split.add_argument(
        "--source",
        default="test",
        help="qrels split whose judged queries are split (default: test)",
    )
    split.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="also write DIR/<part>.txt (one query id a line) and DIR/split.json",
    )
    split.add_argument(
        "--download", action="store_true", help="download a public dataset if needed"
    )
    split.add_argument("--json", action="store_true", help="print JSON")
    _add_locations(split)
    split.set_defaults(func=run_split)


def _data_dir(args: argparse.Namespace) -> str | None:
    return args.data_dir if args.data_dir is not None else os.environ.get("WINNOW_DATA")


def run_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from winnow.data.download import KNOWN_BEIR, MARKER, default_cache_dir

    local: dict[str, str] = {}
    for folder in filter(None, (_data_dir(args) or "").split(os.pathsep)):
        for d in sorted(Path(folder).expanduser().glob("*/corpus.jsonl")):
            local.setdefault(d.parent.name, str(d.parent))
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    cached = {m.parent.name: str(m.parent) for m in sorted(cache.glob(f"*/{MARKER}"))}
    public = {n: {"url": k.url, "md5": k.md5, "sha256": k.sha256} for n, k in KNOWN_BEIR.items()}
    if args.json:
        print(json.dumps({"local": local, "cached": cached, "public": public}, indent=2))
        return 0
    print("local:" if local else "local: none (set --data-dir or $WINNOW_DATA)")
    for name, path in local.items():
        print(f"  {name:<18} {path}")
    print("cached:" if cached else f"cached: none in {cache}")
    for name, path in cached.items():
        print(f"  {name:<18} {path}")
    print("public (winnow data fetch NAME):")
    for name, k in public.items():
        pinned = "sha256" if k["sha256"] else "md5"
        print(f"  {name:<18} {pinned:<7} {k['url']}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from winnow.data.download import fetch_beir

    folder = fetch_beir(
        args.name, args.cache_dir, url=args.url, sha256=args.sha256, timeout=args.timeout
    )
    print(folder)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from winnow.data.loading import load_dataset

    ds = load_dataset(
        args.dataset,
        split=args.split,
        data_dir=_data_dir(args),
        cache_dir=args.cache_dir,
        download=args.download,
    )
    grades = Counter(r for docs in ds.qrels.values() for r in docs.values())
    summary = {
        "name": ds.name,
        "source": ds.source,
        "split": args.split,
        "documents": len(ds.corpus),
        "queries": len(ds.queries),
        "judged_queries": sum(1 for q in ds.queries if q in ds.qrels),
        "judgments": sum(grades.values()),
        "relevance": {str(k): grades[k] for k in sorted(grades)},
        "empty_documents": sum(1 for d in ds.corpus.values() if not (d.title or d.text).strip()),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:<16} {value}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from winnow._fs import atomic_open, write_json_atomic
    from winnow.data.loading import load_dataset
    from winnow.data.splits import QuerySplit
    from winnow.errors import ConfigError

    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    try:
        base = QuerySplit("train", args.train, args.dev, args.seed, args.source)
    except ConfigError as exc:
        raise ConfigError(f"--train/--dev/--source: {exc}") from None
    output = Path(args.output).expanduser() if args.output else None
    if output is not None:  # refused before the dataset is read, not after
        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output {args.output!r} is a file; give a folder")
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--output {args.output!r} cannot be created: {exc.strerror or exc}"
            ) from exc
        if not os.access(output, os.W_OK):
            raise ConfigError(f"--output {args.output!r} is not writable")
    ds = load_dataset(
        args.dataset,
        split=args.source,
        data_dir=_data_dir(args),
        cache_dir=args.cache_dir,
        download=args.download,
    )
    judged = [qid for qid, docs in ds.qrels.items() if docs]
    assigned = base.assign(judged)
    summary = {
        "dataset": ds.name,
        "source": args.source,
        "judged_queries": len(judged),
        "seed": args.seed,
        "parts": {
            part: {"spec": base.with_part(part).spec, "queries": len(ids)}
            for part, ids in assigned.items()
        },
    }
    if output is not None:
        for part, ids in assigned.items():
            with atomic_open(output / f"{part}.txt") as f:
                f.writelines(f"{qid}\n" for qid in ids)
        write_json_atomic(output / "split.json", {**summary, "ids": assigned})
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{ds.name}: {len(judged)} queries judged in {args.source}, seed {args.seed}")
    for part, info in summary["parts"].items():
        print(f"  {part:<6} {info['queries']:>6}  --split {info['spec']}")
    if output is not None:
        print(f"wrote {output}: {', '.join(f'{p}.txt' for p in assigned)}, split.json")
    return 0
