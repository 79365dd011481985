"""Experiment reports: TREC runs, ``metrics.json``, a Markdown report, a plot and a console table.

The output folder is written as a whole: every file goes into a temporary folder beside it, which
then takes its place (:func:`winnow._fs.replace_directory`). An interrupted run leaves the previous
output untouched, and a rerun with fewer systems leaves no run file of the earlier one behind.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError, MissingExtraError
from winnow.evaluation.experiment import ExperimentResult

PHASE_COLUMNS = ("index", "encode", "retrieve", "fuse", "rerank", "total")
MARK_BETTER, MARK_WORSE = "▲", "▼"
LEGEND = (
    f"{MARK_BETTER} / {MARK_WORSE}: significantly better / worse than the baseline "
    "(two-sided {test} per metric, {correction}, p < {alpha})."
)


def legend(comparison) -> str:
    """The marks' legend for a comparison: its test, correction and alpha."""
    from winnow.evaluation.significance import describe_test

    words = describe_test(comparison.test, comparison.correction)
    test, _, correction = words.partition(" vs baseline, ")
    return LEGEND.format(test=test, correction=correction, alpha=comparison.alpha)


def safe_name(name: str) -> str:
    """A file name for a system name or spec (``bm25%100>>rerank:x/y`` -> ``bm25_100_rerank_x_y``)."""
    text = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "system"
    return text[:120]


#: What :func:`write_report` puts in an output folder; anything else there is the user's.
OUTPUT_FILES = ("metrics.json", "report.md", "plot.png", "runs")


def foreign_entries(output: str | Path) -> list[str]:
    """Entries of ``output`` that :func:`write_report` did not write (it would remove them)."""
    folder = Path(output)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name not in OUTPUT_FILES:
            found.append(entry.name)
        elif entry.name == "runs":
            if not entry.is_dir():
                found.append("runs")
            else:
                found += [f"runs/{f.name}" for f in sorted(entry.iterdir()) if f.suffix != ".trec"]
    return found


def check_output_folder(output: str | Path) -> None:
    """Raise :class:`ConfigError` when ``output`` holds files :func:`write_report` did not write,
    or is the current folder or one above it (replacing it would pull the floor from under the
    process)."""
    folder = Path(output).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if folder == cwd or folder in cwd.parents:
        raise ConfigError(
            f"output folder {str(output)!r} is the current folder or holds it; it is replaced as "
            "a whole, so give a folder below it (e.g. 'out')"
        )
    foreign = foreign_entries(output)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ConfigError(
            f"output folder {str(output)!r} holds files an evaluation did not write ({shown}); "
            "it is replaced as a whole, so give a new or empty folder, or an earlier output"
        )


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (then rename)."""
    from winnow._fs import atomic_open

    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def run_files(result: ExperimentResult) -> dict[str, str]:
    """System name -> run file name (unique even when two names sanitise alike)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in result.systems:
        base = safe_name(name)
        candidate, i = base, 2
        while candidate in used:
            candidate, i = f"{base}-{i}", i + 1
        used.add(candidate)
        out[name] = f"{candidate}.trec"
    return out


def format_value(result: ExperimentResult, system: str, metric: str) -> str:
    value = result.comparison.means[system][metric]
    test = result.comparison.tests.get(system, {}).get(metric)
    mark = ""
    if test and test["significant"]:
        mark = MARK_BETTER if test["delta"] > 0 else MARK_WORSE
    return f"{value:.4f}{mark}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def metric_rows(result: ExperimentResult) -> tuple[list[str], list[list[str]]]:
    header = ["system", *result.comparison.metrics]
    rows = []
    for name in result.systems:
        label = f"{name} (baseline)" if name == result.baseline else name
        rows.append([label] + [format_value(result, name, m) for m in result.comparison.metrics])
    return header, rows


def timing_rows(result: ExperimentResult) -> tuple[list[str], list[list[str]]]:
    header = ["system", *PHASE_COLUMNS, "queries/s", "pairs/s", "cached"]
    rows = []
    for name, res in result.systems.items():
        sec = res.seconds
        qps, pps = res.queries_per_second, res.pairs_per_second
        rows.append(
            [name]
            + [_seconds(sec.get(p)) for p in PHASE_COLUMNS]
            + [
                f"{qps:.1f}" if qps else "",
                f"{pps:.0f}" if pps else "",
                "yes" if res.cached else "",
            ]
        )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(result: ExperimentResult, files: dict[str, str] | None = None) -> str:
    c = result.comparison
    parts = [
        f"# Evaluation on {result.dataset}",
        "",
        f"{len(result.queries)} queries; baseline: **{result.baseline}**.",
        "",
        markdown_table(*metric_rows(result)),
        "",
        legend(c),
        "",
        "## Timings (seconds)",
        "",
        markdown_table(*timing_rows(result)),
        "",
        "Seconds per phase; `encode` is the embedding part of index and retrieve time, `total` the "
        "system's wall time. An index built for one system serves the next ones in the same run, "
        "and with a cache folder indexes, embeddings and rerank scores are reused across runs "
        "(`cached`).",
        "",
        "## Systems",
        "",
    ]
    for name, res in result.systems.items():
        spec = result.specs.get(name, res.pipeline.label)
        run_file = f" (run: `runs/{files[name]}`)" if files else ""
        parts.append(f"- **{name}**: `{spec}`{run_file}")
    if c.tests:
        parts += ["", "## Significance", "", f"Against **{result.baseline}**:", ""]
        from winnow.evaluation.significance import STATISTIC

        fixed = {"holm": "p (Holm)", "bonferroni": "p (Bonferroni)", "none": "p (uncorrected)"}
        header = ["system", "metric", "delta", STATISTIC[c.test], "p", fixed[c.correction]]
        rows = [
            [
                name,
                m,
                f"{t['delta']:+.4f}",
                f"{t['statistic']:.3f}",
                f"{t['p']:.4g}",
                f"{t['p_adjusted']:.4g}",
            ]
            for name, tests in c.tests.items()
            for m, t in tests.items()
        ]
        parts.append(markdown_table(header, rows))
    parts += ["", "![per-query differences and systems](plot.png)", ""]
    return "\n".join(parts)


def plot_png(result: ExperimentResult, metric: str | None = None) -> bytes:
    """PNG bytes: systems' ``metric`` as bars, and per-query differences against the baseline."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("report", "matplotlib") from exc
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    c = result.comparison
    metric = metric or ("nDCG@10" if "nDCG@10" in c.metrics else c.metrics[0])
    names = list(result.systems)
    fig = Figure(figsize=(12, 4.5), dpi=100)
    bars, diffs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    values = [c.means[n][metric] for n in names]
    colors = ["#888888" if n == result.baseline else "#3b75af" for n in names]
    bars.bar(range(len(names)), values, color=colors)
    bars.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(metric)
    bars.set_title(f"{result.dataset}: {metric} (grey = baseline)")
    for i, v in enumerate(values):
        bars.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    base = c.per_query[result.baseline][metric]
    qids = sorted(base)
    for name in names:
        if name == result.baseline:
            continue
        delta = sorted((c.per_query[name][metric][q] - base[q] for q in qids), reverse=True)
        diffs.plot(range(len(delta)), delta, label=name, linewidth=1.2)
    diffs.axhline(0, color="black", linewidth=0.8)
    diffs.set_xlabel("queries, sorted by difference")
    diffs.set_ylabel(f"{metric} − {result.baseline}")
    diffs.set_title(f"per-query {metric} difference against {result.baseline}")
    if len(names) > 1:
        diffs.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(
    result: ExperimentResult, output: str | Path, *, plot: bool = True, tag: str = "winnow"
) -> dict[str, Path]:
    """Write ``runs/<system>.trec``, ``metrics.json``, ``report.md`` and ``plot.png`` as ``output``.

    The folder is built beside ``output`` and then takes its place, so it holds exactly this
    result's files (an earlier output there is replaced as a whole). Returns the paths written,
    by kind (``metrics``, ``report``, ``plot``, ``run:<system>``).

    Raises:
        ConfigError: ``output`` holds files that an evaluation does not write (they would be lost).
    """
    from winnow._fs import replace_directory
    from winnow.data import write_run

    output = Path(output).expanduser().resolve()  # "." and ".." have no name to swap
    check_output_folder(output)
    files = run_files(result)
    document = result.to_dict()
    for name, entry in document["systems"].items():
        entry["run"] = f"runs/{files[name]}"
    written: dict[str, Path] = {}
    with replace_directory(output) as tmp:
        (tmp / "runs").mkdir(mode=0o777)
        for name, res in result.systems.items():
            write_run(res.run, tmp / "runs" / files[name], tag=safe_name(f"{tag}-{name}"))
            written[f"run:{name}"] = output / "runs" / files[name]
        write_atomic(
            tmp / "metrics.json", json.dumps(document, indent=2, default=_json_default) + "\n"
        )
        written["metrics"] = output / "metrics.json"
        if plot:
            write_atomic(tmp / "plot.png", plot_png(result))
            written["plot"] = output / "plot.png"
        write_atomic(tmp / "report.md", markdown_report(result, files))
        written["report"] = output / "report.md"
    return written


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def print_tables(result: ExperimentResult, file=None) -> None:
    """The metrics and timings tables on the console (rich when installed, plain text otherwise)."""
    file = file or sys.stdout
    metrics = metric_rows(result)
    timings = timing_rows(result)
    legend_text = legend(result.comparison)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is not None:
        console = Console(file=file, width=max(120, len(" ".join(metrics[0])) + 40))
        for title, (header, rows) in (
            (f"{result.dataset}: {len(result.queries)} queries", metrics),
            ("timings (seconds)", timings),
        ):
            table = Table(title=title, title_justify="left")
            for i, column in enumerate(header):
                table.add_column(column, justify="left" if i == 0 else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        console.print(legend_text)
        return
    for header, rows in (metrics, timings):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for row in [header, *rows]:
            print(
                "  ".join(
                    str(x).rjust(w) if i else str(x).ljust(w)
                    for i, (x, w) in enumerate(zip(row, widths))
                ),
                file=file,
            )
        print(file=file)
    print(legend_text, file=file)
