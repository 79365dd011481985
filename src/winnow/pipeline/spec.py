"""System specs: a small expression language for pipelines, and the named systems.

Grammar (Python's operator precedence: ``%`` binds tighter than ``>>``, which binds tighter
than ``|``)::

    expr  := then ("|" then)*
    then  := cut (">>" cut)*
    cut   := atom ("%" INTEGER)*
    atom  := WORD | "(" expr ")"

A WORD is a primitive (``bm25``, ``dense``, ``maxp``, ``colbert``, ``rrf``, ``combsum``, ``combmnz``,
``rerank``, ``chunked``, the feedback stages ``rm3``, ``bo1``, ``rocchio``), a model stage (``dense:MODEL``,
``maxp:MODEL`` (passage-level dense; ``maxp:MODEL?window=N&stride=N``), ``colbert:MODEL``
(late-interaction first stage; ``rerank:colbert:MODEL`` reranks), ``rocchio:MODEL``, ``chunked:MODEL``,
``rerank:MODEL``, ``KIND:MODEL``
such as ``cross-encoder:MODEL`` (also ``rerank:KIND:MODEL``), ``llm:MODEL``), or a named system
from :data:`SYSTEMS`, or ``tuned:FILE`` (a system ``winnow tune --save`` wrote). A MODEL may carry the kind's options as a model spec does
(``llm:BAAI/bge-reranker-v2-gemma?template=bge-gemma&max_query_length=64``, see
:mod:`winnow.rerankers.registry`). Quotes (``'...'`` or ``"..."``) inside a word keep spaces and
``| % ( ) >`` as part of it: ``'llm:/models/my model?instruction=Is it about wings?'``.
A rescoring word (``rerank``, ``chunked``, ``rerank:MODEL``, ``chunked:MODEL``, ``KIND:MODEL``) may end
in ``@N``: that stage re-scores the top N of its input (instead of ``depth``) and keeps the others
below, in their incoming order. So the two-model document-then-chunk form is written
``bm25 % 100 >> rerank:MODEL_A >> chunked:MODEL_B@10``: model A scores the 100 documents, model B
re-scores the best 10 by their best window.
Examples: ``bm25%100>>rerank:cross-encoder/ms-marco-MiniLM-L-6-v2``,
``(bm25%1000 | dense%1000) >> rrf >> rerank % 10``.

Words are looked up in registries, one entry per word: :data:`SYSTEMS`, :data:`WORDS` (bare words),
:data:`MODEL_WORDS` (``PREFIX:ARG``), then the reranker kinds of :mod:`winnow.rerankers.registry`.
An unknown word is refused with the closest valid ones ("did you mean", difflib) and every error
names the character where the bad word starts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from winnow.defaults import DEFAULT_RERANKER
from winnow.errors import ConfigError
from winnow.pipeline.base import Parallel, Stage, then
from winnow.pipeline.feedback import QueryExpansion, Rocchio
from winnow.pipeline.fusion import RRF, ScoreFusion
from winnow.pipeline.rerank import ChunkedRerank, Rerank, RescoreStage
from winnow.pipeline.retrieval import BM25, DEFAULT_DENSE_MODEL, ColBERT, Dense

#: The named systems, in one place. ``rerank`` / ``chunked`` use the default reranker.
#: ``hybrid`` was ``hybrid-v1`` (RRF of bm25 and dense) until the pseudo-relevance feedback stages
#: came; CombSUM of Bo1-expanded BM25 and dense beat it on Cranfield, CISI and ADI (docs/retrieval.md).
SYSTEMS: dict[str, str] = {
    "hybrid": "(bm25+bo1 % 1000 | dense % 1000) >> combsum",
    "hybrid-v1": "(bm25 % 1000 | dense % 1000) >> rrf",
    "hybrid-combsum": "(bm25 % 1000 | dense % 1000) >> combsum",
    "bm25+rerank": "bm25 >> rerank",
    "dense+rerank": "dense >> rerank",
    "hybrid+rerank": "hybrid >> rerank",
    "hybrid-v1+rerank": "hybrid-v1 >> rerank",
    "bm25+chunked": "bm25 >> chunked",
    "hybrid+chunked": "hybrid >> chunked",
    "hybrid-v1+chunked": "hybrid-v1 >> chunked",
    "bm25+rm3": "bm25 >> rm3",
    "bm25+bo1": "bm25 >> bo1",
    "dense+prf": "dense >> rocchio",
    # late interaction (docs/late_interaction.md); all-MiniLM-L6-v2 is a weak backbone ColBERT
    "colbert-hybrid": "(bm25 % 100 | colbert % 100) >> rrf >> rerank:colbert:"
    + DEFAULT_DENSE_MODEL,
    "bm25+colbert": "bm25 >> rerank:colbert:" + DEFAULT_DENSE_MODEL,
    "dense+maxp": "maxp",
}

#: Words that build a stage directly (the descriptions appear in error messages and --help).
PRIMITIVES: dict[str, str] = {
    "bm25": "BM25 top 1000 (title + text, English stemming, k1=1.5, b=0.75)",
    "dense": "dense retrieval top 1000 with all-MiniLM-L6-v2 (dense:MODEL for another model)",
    "colbert": "late-interaction (MaxSim) retrieval top 1000 (top k before a % k) over an exact "
    "index below 4,096 documents, else PLAID, all-MiniLM-L6-v2 token vectors as a weak ColBERT "
    "(colbert:MODEL for a ColBERT checkpoint, colbert:MODEL?index=plaid or ?index=exact to "
    "choose; rerank:colbert:MODEL reranks)",
    "maxp": "passage-level dense (MaxP): documents longer than the model's input embedded as "
    "windows (the model's input, 25% overlap), each scored by its best window "
    "(maxp:MODEL?window=N&stride=N for another model or window)",
    "rrf": "reciprocal rank fusion (k=60) of a parallel stage",
    "combsum": "CombSUM of min-max normalised scores of a parallel stage",
    "combmnz": "CombMNZ of min-max normalised scores of a parallel stage",
    "rerank": "rerank the top --depth with the default reranker (rerank:MODEL for another, "
    "rerank@N for the top N)",
    "chunked": "document-then-chunk rerank with the default reranker (chunked:MODEL, chunked@N)",
    "rm3": "RM3 query expansion from the top 10 of the run, re-querying BM25 (10 terms, weight 0.5)",
    "bo1": "Bo1 query expansion from the top 3 of the run, re-querying BM25 (10 terms)",
    "rocchio": "Rocchio feedback on embeddings: query moved toward its top 5 (alpha 0.4, beta 0.6), "
    "dense search again (rocchio:MODEL for another model)",
}

#: Options of a ``maxp:MODEL?...`` word, with what they mean.
MAXP_OPTIONS: dict[str, str] = {
    "window": "tokens per window; default: the model's input less special tokens",
    "stride": "tokens from one window's start to the next; default: 3/4 of the window",
}

_TOKEN = re.compile(r"""\s*(?:(>>)|([|%()])|((?:[^\s|%()>'"]|'[^']*'|"[^"]*")+))""")
_QUOTED = re.compile("'([^']*)'|\"([^\"]*)\"")
#: ``WORD@N``: a rescoring stage with its own depth.
_AT_DEPTH = re.compile(r"(?P<word>.+)@(?P<depth>\d+)")


@dataclass
class SpecOptions:
    """How words become stages: the default reranker and the settings shared by every stage."""

    reranker: str = DEFAULT_RERANKER
    depth: int = 100
    dense_model: str = DEFAULT_DENSE_MODEL
    device: str | None = None
    dtype: str | None = None
    batch_queries: int | None = None
    progress: bool = False
    #: (model, kind, **text options of the spec) -> Reranker; defaults to
    #: ``winnow.rerankers.loading.load_model_ref`` with device and dtype.
    loader: Callable | None = None

    def load(self, spec: str):
        """The reranker a model spec (``[KIND:]MODEL[?KEY=VALUE&...]``) names."""
        from winnow.rerankers.registry import parse_model_ref

        ref = parse_model_ref(spec)
        if self.loader is not None:
            return self.loader(ref.model, ref.kind, **dict(ref.options))
        from winnow.rerankers.loading import load_model_ref

        defaults = {"show_progress": True} if self.progress else {}
        return load_model_ref(ref, device=self.device, dtype=self.dtype, **defaults)


def valid_words() -> str:
    return ", ".join([*PRIMITIVES, *SYSTEMS])


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean bm25?"`` for a close match among ``candidates`` (difflib), else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


# -- the words: one registry entry (one line) per word --------------------------------------------
# A WORDS factory builds the stage of a bare word from the spec's options; a MODEL_WORDS factory
# builds ``PREFIX:ARG`` from the options and ARG. A factory raises ConfigError for a bad ARG; the
# parser adds the spec and the position. Reranker kinds (``cross-encoder:MODEL``, ``llm:MODEL``,
# ``rerank:MODEL``...) come from winnow.rerankers.registry, after these. Each word's description is
# in PRIMITIVES (errors and --help show it).


def _rerank(o: SpecOptions, model: str, name: str | None = None) -> Stage:
    return Rerank(o.load(model), depth=o.depth, batch_queries=o.batch_queries, name=name or model)


def _chunked(o: SpecOptions, model: str) -> Stage:
    return ChunkedRerank(o.load(model), depth=o.depth, batch_queries=o.batch_queries, name=model)


def _no_options(prefix: str, model: str) -> str:
    if "?" in model:
        raise ConfigError(
            f"{prefix + ':' + model!r}: a {prefix} stage takes no options (they are for rerankers)"
        )
    return model


def _tuned(o: SpecOptions, path: str) -> Stage:
    from winnow.evaluation.tune import load_tuned

    return load_tuned(path)


def _maxp(o: SpecOptions, spec: str) -> Stage:
    """``maxp:MODEL[?window=N&stride=N]``: passage-level dense with ``MODEL``."""
    from winnow.rerankers.registry import parse_model_ref

    word = f"maxp:{spec}"
    ref = parse_model_ref(spec)
    if ref.kind is not None:
        raise ConfigError(f"{word!r}: a maxp stage embeds with a bi-encoder; name no kind")
    settings: dict[str, int] = {}
    for key, value in ref.options:
        if key not in MAXP_OPTIONS:
            raise ConfigError(
                f"{word!r}: unknown option {key!r}; a maxp stage takes "
                + ", ".join(f"{k} ({v})" for k, v in MAXP_OPTIONS.items())
                + did_you_mean(key, MAXP_OPTIONS)
            )
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{word!r}: {key} must be a positive number of tokens, got {value!r}")
        settings[key] = int(value)
    try:
        return Dense(ref.model, device=o.device, dtype=o.dtype, passages=True, **settings)
    except ConfigError as exc:
        raise ConfigError(f"{word!r}: {exc}") from None


def _dense(o: SpecOptions, spec: str) -> Stage:
    """``dense:MODEL[?backend=onnx&dtype=int8&calibration=PATH...]``: dense with ``MODEL`` on an
    inference backend (the bi-encoder's backend options and ``dtype``)."""
    from winnow.pipeline.retrieval import DENSE_BACKEND_OPTIONS
    from winnow.rerankers.bi_encoder import BiEncoderOptions
    from winnow.rerankers.options import parse_text_options, split_loader_options
    from winnow.rerankers.registry import parse_model_ref

    word = f"dense:{spec}"
    ref = parse_model_ref(spec)
    if ref.kind is not None:
        raise ConfigError(f"{word!r}: a dense stage embeds with a bi-encoder; name no kind")
    if not ref.options:
        return Dense(ref.model, device=o.device, dtype=o.dtype)
    for key, _ in ref.options:
        if key not in (*DENSE_BACKEND_OPTIONS, "dtype"):
            raise ConfigError(
                f"{word!r}: unknown option {key!r}; a dense stage takes "
                + ", ".join((*DENSE_BACKEND_OPTIONS, "dtype"))
                + did_you_mean(key, (*DENSE_BACKEND_OPTIONS, "dtype"))
            )
    try:
        typed = parse_text_options("bi-encoder", BiEncoderOptions, dict(ref.options))
        loader, options = split_loader_options(typed)
        return Dense(ref.model, device=o.device, dtype=loader.get("dtype", o.dtype), **options)
    except ConfigError as exc:
        raise ConfigError(f"{word!r}: {exc}") from None


WORDS: dict[str, Callable[[SpecOptions], Stage]] = {
    "bm25": lambda o: BM25(),
    "dense": lambda o: Dense(o.dense_model, device=o.device, dtype=o.dtype),
    "colbert": lambda o: ColBERT(DEFAULT_DENSE_MODEL, device=o.device, dtype=o.dtype),
    "maxp": lambda o: Dense(o.dense_model, device=o.device, dtype=o.dtype, passages=True),
    "rrf": lambda o: RRF(),
    "combsum": lambda o: ScoreFusion("combsum"),
    "combmnz": lambda o: ScoreFusion("combmnz"),
    "rerank": lambda o: _rerank(o, o.reranker),
    "chunked": lambda o: _chunked(o, o.reranker),
    "rm3": lambda o: QueryExpansion("rm3"),
    "bo1": lambda o: QueryExpansion("bo1"),
    "rocchio": lambda o: Rocchio(o.dense_model, device=o.device, dtype=o.dtype),
}

#: ``PREFIX:ARG`` words: prefix -> (what ARG is, the factory).
MODEL_WORDS: dict[str, tuple[str, Callable[[SpecOptions, str], Stage]]] = {
    "dense": ("MODEL", _dense),
    "maxp": ("MODEL", _maxp),
    "colbert": ("MODEL", lambda o, m: ColBERT.from_spec(m, device=o.device, dtype=o.dtype)),
    "rocchio": (
        "MODEL",
        lambda o, m: Rocchio(_no_options("rocchio", m), device=o.device, dtype=o.dtype),
    ),
    "tuned": ("FILE", _tuned),
    "chunked": ("MODEL", _chunked),
}


def model_word_forms() -> list[str]:
    """Every ``PREFIX:ARG`` form, the reranker kinds' included (for errors and suggestions)."""
    from winnow.rerankers.registry import available_kinds

    forms = [f"{prefix}:{arg}" for prefix, (arg, _) in MODEL_WORDS.items()]
    return [*forms, "rerank:MODEL", "llm:MODEL", *(f"{k}:MODEL" for k in available_kinds())]


class _Token(str):
    """A token of a spec that knows where it starts (0-based character offset)."""

    start: int

    def __new__(cls, text: str, start: int) -> _Token:
        token = super().__new__(cls, text)
        token.start = start
        return token


def tokenize(spec: str) -> list[str]:
    """The tokens of ``spec`` (each a ``str`` whose ``start`` is its offset in the stripped spec)."""
    tokens: list[str] = []
    pos = 0
    spec = spec.strip()
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if m is None or m.end() == pos:
            raise ConfigError(
                f"system spec {spec!r}, at character {pos + 1}: unexpected "
                f"{spec[pos:].strip()[:20]!r}"
            )
        start = m.start(1) if m.group(1) else m.start(2) if m.group(2) else m.start(3)
        word = m.group(3)
        if word is not None and "?" in word and spec.startswith("%", m.end()):
            # "m?max_length=64%10": a cut, or a percent escape of the value? Refuse to guess.
            raise ConfigError(
                f"system spec {spec!r}, at character {m.end() + 1}: '%' right after the options "
                f"of {word!r} is ambiguous; put a space before a cut (MODEL?KEY=VALUE % 10) and "
                "quote a spec with percent escapes ('MODEL?query_prompt=query:%20')"
            )
        if word is not None and ("'" in word or '"' in word):
            word = _QUOTED.sub(lambda q: q.group(1) if q.group(1) is not None else q.group(2), word)
        tokens.append(_Token(m.group(1) or m.group(2) or word, start))
        pos = m.end()
        while pos < len(spec) and spec[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    def __init__(self, spec: str, options: SpecOptions, seen: tuple[str, ...]):
        self.spec = spec.strip()
        self.options = options
        self.seen = seen
        self.tokens = tokenize(spec)
        self.pos = 0

    def error(self, message: str, token: str | None = None) -> ConfigError:
        """The error for ``message``, naming the spec and where ``token`` starts in it."""
        start = getattr(token, "start", None)
        where = "" if start is None else f", at character {start + 1}"
        return ConfigError(f"system spec {self.spec!r}{where}: {message}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.error("ends too early")
        self.pos += 1
        return token

    def parse(self) -> Stage:
        if not self.tokens:
            raise self.error(f"is empty; valid names: {valid_words()}")
        stage = self.expr()
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token!r} after a complete expression", token)
        return stage

    def expr(self) -> Stage:
        branches = [self.then()]
        while self.peek() == "|":
            self.take()
            branches.append(self.then())
        return branches[0] if len(branches) == 1 else Parallel(branches)

    def then(self) -> Stage:
        first = self.peek()
        steps = [self.cut()]
        while self.peek() == ">>":
            self.take()
            steps.append(self.cut())
        if len(steps) == 1:
            return steps[0]
        try:
            return then(steps)
        except ConfigError as exc:
            raise self.error(str(exc), first) from None

    def cut(self) -> Stage:
        stage = self.atom()
        while self.peek() == "%":
            self.take()
            number = self.take()
            if not number.isdigit() or int(number) < 1:
                raise self.error(
                    f"'%' must be followed by a positive integer, got {number!r}", number
                )
            stage = stage % int(number)
        return stage

    def atom(self) -> Stage:
        token = self.take()
        if token == "(":
            stage = self.expr()
            if self.peek() != ")":
                raise self.error("missing ')'", token)
            self.take()
            return stage
        if token in (")", "|", "%", ">>"):
            raise self.error(f"expected a name or '(' but got {token!r}", token)
        try:
            return self.word(str(token), token)
        except ConfigError as exc:
            if type(exc) is not ConfigError or str(exc).startswith("system spec "):
                raise
            raise self.error(str(exc), token) from None

    def word(self, word: str, token: str) -> Stage:
        at = _AT_DEPTH.fullmatch(word)
        if at is not None:
            return self.at_depth(at["word"], int(at["depth"]), token)
        o = self.options
        if word in SYSTEMS:
            if word in self.seen:
                raise self.error(f"named system {word!r} refers to itself", token)
            return _Parser(SYSTEMS[word], o, (*self.seen, word)).parse()
        if word in WORDS:
            return WORDS[word](o)
        prefix, sep, arg = word.partition(":")
        if sep and arg:
            if prefix in MODEL_WORDS:
                return MODEL_WORDS[prefix][1](o, arg)
            from winnow.rerankers.registry import KIND_ALIASES, available_kinds

            if prefix in KIND_ALIASES or prefix in available_kinds():
                return _rerank(o, word)
            known = [*MODEL_WORDS, *KIND_ALIASES, *available_kinds()]
            raise self.error(
                f"unknown stage kind {prefix!r} in {word!r}; valid: "
                + ", ".join(model_word_forms())
                + did_you_mean(prefix, known),
                token,
            )
        raise self.error(
            f"unknown name {word!r}; valid names: {valid_words()}"
            + did_you_mean(word, [*WORDS, *SYSTEMS, *model_word_forms()]),
            token,
        )

    def at_depth(self, word: str, depth: int, token: str) -> Stage:
        """``word@depth``: the rescoring stage ``word`` with its own depth."""
        if depth < 1:
            raise self.error(
                f"'@' must be followed by a positive integer, got {depth!r} in {word!r}", token
            )
        options, self.options = self.options, replace(self.options, depth=depth)
        try:
            stage = self.word(word, token)
        finally:
            self.options = options
        if not isinstance(stage, RescoreStage):
            raise self.error(
                f"'{word}@{depth}': a depth applies to rerank and chunked stages only "
                "(for a rank cut-off write '% N')",
                token,
            )
        stage.label += f"@{depth}"
        return stage


def parse_system(spec: str, options: SpecOptions | None = None) -> Stage:
    """Build the pipeline a system spec describes (see the module docstring for the grammar)."""
    if not isinstance(spec, str):
        raise ConfigError(f"a system spec must be a string, got {type(spec).__name__}")
    return _Parser(spec, options or SpecOptions(), ()).parse()


def split_systems(text: str) -> list[str]:
    """``"bm25,dense,hybrid"`` -> names; commas inside parentheses or quotes do not split."""
    parts, depth, current, quote = [], 0, [], None
    for ch in text:
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        else:
            depth += ch == "("
            depth -= ch == ")"
        current.append(ch)
    parts.append("".join(current).strip())
    if any(not p for p in parts):
        raise ConfigError(f"--systems {text!r} has an empty entry")
    return parts
