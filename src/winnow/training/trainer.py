"""Fine-tuning bi-encoders and cross-encoders on mined files, with sentence-transformers' trainers.

The output folder is a plain sentence-transformers model folder that ``winnow.load_reranker(DIR)``,
``dense:DIR`` (bi-encoders) and ``rerank:DIR`` load directly, plus ``training.json`` (settings, data,
time, guide calls, dev scores). Training runs in a temporary sibling folder renamed to the output
at the very end, so an interrupted or failed run leaves no half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from winnow._progress import progress_enabled
from winnow.errors import ConfigError, DatasetError, ModelLoadError, require

logger = logging.getLogger(__name__)

BI_ENCODER_LOSSES = ("guided", "gist", "mnrl")
CROSS_ENCODER_LOSSES = ("bce", "lambda", "mnrl")
TRAINING_FILE = "training.json"


@dataclass
class TrainResult:
    """What a training run produced: the model folder and what it cost."""

    output: str
    loss: str
    seconds: float
    steps: int
    rows: int
    guide: dict[str, int] = field(default_factory=dict)  # GuideStats totals (guided loss only)
    dev: list[dict[str, float]] = field(default_factory=list)  # dev metrics at each evaluation
    best_metric: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- checks -----------------------------------------------------------------------------------
def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_common(epochs, batch_size, learning_rate, seed, max_steps, max_length) -> None:
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("seed", seed, 0)
    if max_steps is not None:
        _positive_int("max_steps", max_steps)
    if max_length is not None:
        _positive_int("max_length", max_length, 8)
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not 0 < learning_rate < 1
    ):
        raise ConfigError(f"learning_rate must be a number in (0, 1), got {learning_rate!r}")


@contextlib.contextmanager
def _staging(output: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``output`` that becomes ``output`` only when the block succeeds."""
    target = Path(output).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output {str(target)!r} is a file; expected a folder to create")
    if target.exists() and not overwrite:
        raise ConfigError(f"output folder {str(target)!r} already exists (overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.rename(target, old / "model")
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None:  # put the previous model back
                os.rename(old / "model", target)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _base_path(model: str, want: str) -> str:
    """Resolve ``model`` and refuse kinds that cannot be trained as ``want``."""
    from winnow.rerankers.hub import infer_kind, resolve_model_path

    path = resolve_model_path(model)
    try:
        kind = infer_kind(path)
    except ConfigError:
        kind = None  # a plain transformers encoder (no head, no modules.json): trainable as either
    if want == "bi-encoder" and kind == "cross-encoder":
        raise ModelLoadError(
            f"base model {model!r} is a cross-encoder (a sequence-classification head); train it "
            "with `winnow train cross-encoder`, or give an embedding model"
        )
    if kind in ("llm-pointwise", "llm-listwise"):
        raise ModelLoadError(
            f"base model {model!r} is a causal language model; winnow train fine-tunes encoder "
            f"models only ({want}s)"
        )
    return path


def _load(factory, model: str, what: str):
    try:
        return factory()
    except (ConfigError, ModelLoadError):
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load base model {model!r} as a {what} to train: {exc}"
        ) from exc


def _dev_dataset(dataset: str | None, dev: str, data_dir: str | None):
    from winnow.data import load_dataset

    if dataset is None:
        raise ConfigError(f"--dev {dev!r} is a split spec; give the collection with --dataset")
    ds = load_dataset(dataset, split=dev, data_dir=data_dir, download=False)
    if not ds.queries:
        raise DatasetError(f"dev split {dev!r} of {dataset!r} has no judged queries")
    return ds


def _is_file(dev: str) -> bool:
    return Path(dev).expanduser().is_file()


# -- bi-encoders ------------------------------------------------------------------------------
def train_bi_encoder(
    data: str | os.PathLike,
    model: str,
    output: str | os.PathLike,
    *,
    loss: str = "guided",
    guide: Any = None,
    preset: str = "balanced",
    guide_options: dict[str, Any] | None = None,
    guide_max_length: int | None = None,
    guide_dtype: str | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    mini_batch_size: int | None = None,
    learning_rate: float = 2e-5,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    max_length: int | None = None,
    max_steps: int | None = None,
    dev: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune a sentence-transformers bi-encoder on a mined file.

    Args:
        data: mined file (pair, triplet or n-tuple rows; see :mod:`winnow.training.mined`).
        model: base model (hub id or folder), e.g. ``sentence-transformers/all-MiniLM-L6-v2``.
        output: folder to create (``overwrite`` replaces an existing one, only once training is done).
        loss: ``guided`` (:class:`~winnow.training.RerankerGuidedGISTLoss` with ``guide`` any
            winnow reranker or ``[KIND:]MODEL`` spec, ``preset`` and ``guide_options``), ``gist``
            (sentence-transformers' ``GISTEmbedLoss``, ``guide`` a bi-encoder) or ``mnrl``
            (``MultipleNegativesRankingLoss``). ``mini_batch_size`` switches each to its
            gradient-caching variant. ``guide_max_length`` (tokens) and ``guide_dtype``
            (``bfloat16``: faster on recent CPUs) apply when ``guide`` is a spec; ``guide_options`` are :class:`RerankerGuidedGISTLoss` keywords
            (``contrast_positives``, ``margin``, ``cache``, ...).
        dev: a split spec of ``dataset`` (nDCG@10 of dense retrieval over its corpus) or a mined
            file (its loss), evaluated after each epoch; the best epoch's weights are kept.
        progress: progress bars (default: when stderr is a terminal).
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
    """
    require("datasets", "training")
    require("accelerate", "training")
    if loss not in BI_ENCODER_LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; valid: {', '.join(BI_ENCODER_LOSSES)}")
    if loss in ("guided", "gist") and guide is None:
        raise ConfigError(f"loss {loss!r} needs a guide model")
    if loss == "mnrl" and guide is not None:
        raise ConfigError("loss 'mnrl' takes no guide (use 'guided' or 'gist')")
    _check_common(epochs, batch_size, learning_rate, seed, max_steps, max_length)
    if mini_batch_size is not None:
        _positive_int("mini_batch_size", mini_batch_size)
    if guide_max_length is not None:
        _positive_int("guide_max_length", guide_max_length, 8)
    from winnow.training.mined import read_mined

    mined = read_mined(data)
    columns = mined.tuples()
    guide_name = guide if isinstance(guide, str) else None  # the user's name, for training.json
    if loss == "guided" and isinstance(guide, str):
        from winnow.rerankers.loading import load_reranker
        from winnow.rerankers.registry import parse_model_spec

        kind, name = parse_model_spec(guide)
        guide = load_reranker(name, kind, max_length=guide_max_length, dtype=guide_dtype)
    path = _base_path(model, "bi-encoder")
    with _staging(output, overwrite) as tmp:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.base.sampler import BatchSamplers

        student = _load(lambda: SentenceTransformer(path), model, "sentence-transformers model")
        if max_length is not None:
            student.max_seq_length = max_length
        loss_fn, collator = _bi_encoder_loss(
            loss, student, guide, preset, guide_options or {}, mini_batch_size
        )
        evaluator, eval_dataset, metric = None, None, None
        if dev is not None:
            if _is_file(dev):
                eval_dataset = Dataset.from_dict(read_mined(dev).tuples())
                metric = ("eval_loss", False)
            else:
                evaluator = _ir_evaluator(_dev_dataset(dataset, dev, data_dir))
                metric = ("eval_dev_cosine_ndcg@10", True)
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp / "checkpoints"),
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            **_arguments(
                epochs, batch_size, learning_rate, warmup_ratio, seed, max_steps, progress, metric
            ),
        )
        trainer = SentenceTransformerTrainer(
            model=student,
            args=args,
            train_dataset=Dataset.from_dict(columns),
            eval_dataset=eval_dataset,
            loss=loss_fn,
            evaluator=evaluator,
            data_collator=collator,
            callbacks=list(callbacks),
        )
        result = _run(trainer, tmp, loss, len(mined.rows), metric)
        if loss == "guided":
            result.guide = loss_fn.total_stats.as_dict()
        _finish(student, tmp, result, settings=_settings(locals()))
    result.output = str(Path(output).expanduser())
    return result


def _bi_encoder_loss(loss, student, guide, preset, guide_options, mini_batch_size):
    from sentence_transformers.sentence_transformer import losses

    if loss == "mnrl":
        if mini_batch_size:
            return losses.CachedMultipleNegativesRankingLoss(
                student, mini_batch_size=mini_batch_size
            ), None
        return losses.MultipleNegativesRankingLoss(student), None
    if loss == "gist":
        from sentence_transformers import SentenceTransformer

        from winnow.rerankers.registry import parse_model_spec

        kind, name = parse_model_spec(guide) if isinstance(guide, str) else (None, guide)
        if kind not in (None, "bi-encoder"):
            raise ConfigError(f"loss 'gist' needs a bi-encoder guide, got {kind}:{name}")
        guide_path = _base_path(name, "bi-encoder")
        st_guide = _load(lambda: SentenceTransformer(guide_path), name, "bi-encoder guide")
        shared = (
            "contrast_anchors",
            "contrast_positives",
            "margin",
            "margin_strategy",
            "temperature",
        )
        unknown = sorted(set(guide_options) - set(shared))
        if unknown:
            raise ConfigError(
                f"loss 'gist' does not take {', '.join(unknown)}; it takes {', '.join(shared)}"
            )
        if mini_batch_size:
            return losses.CachedGISTEmbedLoss(
                student, st_guide, mini_batch_size=mini_batch_size, **guide_options
            ), None
        return losses.GISTEmbedLoss(student, st_guide, **guide_options), None
    from winnow.training.gist import GuidedDataCollator, RerankerGuidedGISTLoss

    loss_fn = RerankerGuidedGISTLoss(
        student, guide, preset=preset, mini_batch_size=mini_batch_size, **guide_options
    )
    return loss_fn, GuidedDataCollator(preprocess_fn=student.preprocess)


def _ir_evaluator(ds):
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    relevant = {q: {d for d, rel in docs.items() if rel > 0} for q, docs in ds.qrels.items()}
    queries = {q: text for q, text in ds.queries.items() if relevant.get(q)}
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus={d: doc.full_text for d, doc in ds.corpus.items()},
        relevant_docs={q: relevant[q] for q in queries},
        name="dev",
        main_score_function="cosine",
        score_functions={"cosine": _cosine_scores},
        ndcg_at_k=[10],
        show_progress_bar=False,
        write_csv=False,
    )


def _cosine_scores(a, b):
    from sentence_transformers.util import cos_sim

    return cos_sim(a, b)


# -- cross-encoders ---------------------------------------------------------------------------
def train_cross_encoder(
    data: str | os.PathLike,
    model: str,
    output: str | os.PathLike,
    *,
    loss: str = "bce",
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    max_length: int | None = None,
    max_steps: int | None = None,
    dev: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    dev_depth: int = 30,
    progress: bool | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune a cross-encoder (one relevance logit) on a mined file.

    ``loss``: ``bce`` (``BinaryCrossEntropyLoss`` on (query, document, 0/1) pairs; tuples give
    their positive 1 and negatives 0), ``lambda`` (``LambdaLoss`` on each query's list) or ``mnrl``
    (``MultipleNegativesRankingLoss`` on (anchor, positive, negatives...) tuples). A base that is a
    sentence-transformers bi-encoder (e.g. all-MiniLM-L6-v2) gets a fresh one-logit head on its
    transformer. ``dev``: a split spec of ``dataset`` (nDCG@10 reranking its BM25 top
    ``dev_depth``, positives always included) or a mined file (its loss).
    """
    require("datasets", "training")
    require("accelerate", "training")
    if loss not in CROSS_ENCODER_LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; valid: {', '.join(CROSS_ENCODER_LOSSES)}")
    _check_common(epochs, batch_size, learning_rate, seed, max_steps, max_length)
    _positive_int("dev_depth", dev_depth)
    from winnow.training.mined import read_mined

    mined = read_mined(data)
    columns = _cross_encoder_columns(mined, loss)
    path = _base_path(model, "cross-encoder")
    with _staging(output, overwrite) as tmp:
        from datasets import Dataset
        from sentence_transformers.cross_encoder import (
            CrossEncoder,
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
            losses,
        )

        def build():
            from winnow.rerankers.hub import infer_kind

            try:
                is_classifier = infer_kind(path) == "cross-encoder"
            except ConfigError:
                is_classifier = False
            labels = {} if is_classifier else {"num_labels": 1}
            ce = CrossEncoder(path, max_length=max_length, **labels)
            if ce.num_labels != 1:
                raise ModelLoadError(
                    f"base model {model!r} has {ce.num_labels} labels; winnow train "
                    "cross-encoder trains one-logit models"
                )
            return ce

        ce = _load(build, model, "cross-encoder")
        loss_fn = {
            "bce": losses.BinaryCrossEntropyLoss,
            "lambda": losses.LambdaLoss,
            "mnrl": losses.MultipleNegativesRankingLoss,
        }[loss](ce)
        evaluator, eval_dataset, metric = None, None, None
        if dev is not None:
            if _is_file(dev):
                eval_dataset = Dataset.from_dict(_cross_encoder_columns(read_mined(dev), loss))
                metric = ("eval_loss", False)
            else:
                evaluator = _rerank_evaluator(_dev_dataset(dataset, dev, data_dir), dev_depth)
                metric = ("eval_dev_ndcg@10", True)
        args = CrossEncoderTrainingArguments(
            output_dir=str(tmp / "checkpoints"),
            **_arguments(
                epochs, batch_size, learning_rate, warmup_ratio, seed, max_steps, progress, metric
            ),
        )
        trainer = CrossEncoderTrainer(
            model=ce,
            args=args,
            train_dataset=Dataset.from_dict(columns),
            eval_dataset=eval_dataset,
            loss=loss_fn,
            evaluator=evaluator,
            callbacks=list(callbacks),
        )
        result = _run(trainer, tmp, loss, len(mined.rows), metric)
        _finish(ce, tmp, result, settings=_settings(locals()))
    result.output = str(Path(output).expanduser())
    return result


def _cross_encoder_columns(mined, loss: str) -> dict[str, list]:
    if loss == "bce":
        return mined.labeled_pairs()
    if loss == "lambda":
        return mined.labeled_lists()
    return mined.tuples()


def _rerank_evaluator(ds, depth: int):
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    from winnow.retrieval.bm25 import BM25Index

    queries = {
        q: text
        for q, text in ds.queries.items()
        if any(r > 0 for r in ds.qrels.get(q, {}).values())
    }
    run = BM25Index().index(ds.corpus).search(queries, top_k=depth)
    samples = []
    for q, text in queries.items():
        samples.append(
            {
                "query": text,
                "positive": [ds.corpus[d].full_text for d, r in ds.qrels[q].items() if r > 0],
                "documents": [ds.corpus[d].full_text for d in run.get(q, {})],
            }
        )
    return CrossEncoderRerankingEvaluator(
        samples, at_k=10, name="dev", show_progress_bar=False, write_csv=False
    )


# -- shared -----------------------------------------------------------------------------------
def _arguments(epochs, batch_size, learning_rate, warmup_ratio, seed, max_steps, progress, metric):
    per_epoch = {"eval_strategy": "epoch", "save_strategy": "epoch"} if metric else {}
    best = (
        {
            "load_best_model_at_end": True,
            "metric_for_best_model": metric[0],
            "greater_is_better": metric[1],
            "save_total_limit": 1,
        }
        if metric
        else {"save_strategy": "no"}
    )
    return {
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": float(warmup_ratio),  # a float below 1 is a ratio (transformers >= 5)
        "dataloader_pin_memory": _has_cuda(),
        "seed": seed,
        "data_seed": seed,
        "max_steps": max_steps if max_steps is not None else -1,
        "disable_tqdm": not progress_enabled(progress),
        "report_to": "none",
        "logging_strategy": "epoch",
        **per_epoch,
        **best,
    }


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(trainer, tmp: Path, loss: str, rows: int, metric) -> TrainResult:
    from transformers.trainer_callback import PrinterCallback

    # without progress bars the trainer prints its logs on stdout, which belongs to the caller
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    state = trainer.state
    dev = []
    if metric:
        dev = [
            {k: v for k, v in entry.items() if k.startswith("eval_") or k in ("epoch", "step")}
            for entry in state.log_history
            if metric[0] in entry
        ]
    return TrainResult(
        output=str(tmp),
        loss=loss,
        seconds=round(seconds, 3),
        steps=int(state.global_step),
        rows=rows,
        dev=dev,
        best_metric=state.best_metric,
    )


def _settings(scope: dict[str, Any]) -> dict[str, Any]:
    names = (
        "data",
        "model",
        "loss",
        "preset",
        "guide",
        "guide_options",
        "guide_max_length",
        "guide_dtype",
        "epochs",
        "batch_size",
        "mini_batch_size",
        "learning_rate",
        "warmup_ratio",
        "seed",
        "max_length",
        "max_steps",
        "dev",
        "dataset",
    )
    out = {}
    for name in names:
        if name in scope:
            value = scope[name]
            if name == "guide" and not isinstance(value, (str, type(None))):
                value = scope.get("guide_name") or getattr(
                    getattr(value, "config", None), "model", repr(value)
                )
            if name == "guide_options" and value:
                value = {
                    k: v if isinstance(v, (int, float, str, bool)) else repr(v)
                    for k, v in value.items()
                }
            out[name] = str(value) if isinstance(value, os.PathLike) else value
    return out


def _finish(model, tmp: Path, result: TrainResult, settings: dict[str, Any]) -> None:
    """Save the (best) weights at the root of ``tmp`` and drop the checkpoints."""
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    model.save_pretrained(str(tmp))
    record = {"settings": settings, **result.as_dict()}
    record.pop("output")
    (tmp / TRAINING_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
