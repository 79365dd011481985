"""Request and response bodies of the HTTP API (pydantic lives here, at the boundary, only).

Three shapes: Cohere v1/Jina/Voyage (``POST /v1/rerank``), Cohere v2 (``POST /v2/rerank``) and Hugging
Face TEI (``POST /rerank``). Unknown fields
are ignored so that clients written for those services work unchanged. Booleans are strict (``0`` or
``"true"`` is a 422 naming the field, not silently converted) and integers take exactly what JSON
Schema calls an integer (``3`` or ``3.0``, not ``3.5``), so what the server accepts is what its
OpenAPI schema says. Limits that the operator configures (documents per request, characters) are
checked by the app, not here, because they are not known when the schema is built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator


def _valid_text(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} contains invalid Unicode (a lone surrogate) at character {exc.start}"
        ) from None
    return value


def _json_integer(value: object) -> object:
    """JSON Schema's integer: a number with no fractional part (``3``, ``3.0``), never ``true``/``"3"``.

    pydantic's lax ``int`` would also take booleans and numeric strings; its strict one refuses
    ``3.0``. Fractions are left to ``int`` (a 422 that says "fractional part").
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("Input should be a valid integer")
    return value


#: A positive integer field that accepts what the published schema calls one, and nothing else.
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]

#: What counts as blank: every character Python's ``str.isspace`` calls whitespace (ASCII ones,
#: U+0085, no-break space U+00A0, the U+2000 spaces, ideographic space U+3000, ...), listed so the
#: published pattern says exactly the same in Python, Rust and ECMA regular expressions.
_BLANK = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
#: The published form of the same rule (a query must contain a non-blank character).
QUERY_PATTERN = "[^" + "".join(f"\\u{ord(c):04x}" for c in _BLANK) + "]"


def _non_empty_query(value: str) -> str:
    if not value.strip(_BLANK):
        raise ValueError("query is empty (only whitespace)")
    return _valid_text(value, "query")


RETURN_CHUNKS = (
    "add each document's best windows (`chunks`: index, text, start, end, score); without "
    "max_chunks_per_doc a document is one window, the whole text"
)
CHUNKS_PER_DOC = "how many windows return_chunks gives per document (default 1, the best)"


def _check_document_list(docs: list) -> list:
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            _valid_text(doc, f"documents[{i}]")
    return docs


class DocumentObject(BaseModel):
    """A document given as an object (Cohere/Jina); only ``text`` is used."""

    model_config = ConfigDict(extra="ignore")
    text: str

    @field_validator("text")
    @classmethod
    def _check_text(cls, v: str) -> str:
        return _valid_text(v, "document text")


class _QueryAndDocuments(BaseModel):
    """What the Cohere-style requests share: a non-blank ``query`` and ``documents`` given as
    strings or ``{"text": ...}`` objects (each subclass declares both fields)."""

    @field_validator("query", check_fields=False)
    @classmethod
    def _check_query(cls, v: str) -> str:
        return _non_empty_query(v)

    @field_validator("documents", check_fields=False)
    @classmethod
    def _check_documents(cls, v: list[str | DocumentObject]) -> list[str | DocumentObject]:
        return _check_document_list(v)

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankRequest(_QueryAndDocuments):
    """``POST /v1/rerank`` (Cohere v1, Jina and Voyage reranker APIs)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(
        None, min_length=1, description="model name; the server's first model if omitted"
    )
    query: str = Field(
        ...,
        min_length=1,
        description="the search query (not blank)",
        json_schema_extra={"pattern": QUERY_PATTERN},
    )
    documents: list[str | DocumentObject] = Field(
        ..., min_length=1, description='texts to rerank, as strings or {"text": ...} objects'
    )
    top_n: PositiveInt | None = Field(None, description="return only the best N results")
    top_k: PositiveInt | None = Field(
        None, description="Voyage's name for top_n; when both are given the smaller applies"
    )
    return_documents: StrictBool = Field(True, description="include each document's text")
    normalize: Literal["none", "sigmoid"] = Field(
        "none", description="'sigmoid' maps raw model scores to (0, 1)"
    )
    max_chunks_per_doc: PositiveInt | None = Field(
        None,
        description="split long documents into up to N token windows; a document scores as its "
        "best window",
    )
    return_token_info: StrictBool = Field(
        False, description="add `truncated` and `num_tokens` to each result"
    )
    return_chunks: StrictBool = Field(False, description=RETURN_CHUNKS)
    chunks_per_doc: PositiveInt | None = Field(None, description=CHUNKS_PER_DOC)

    def limit(self) -> int | None:
        """How many results to return: the smaller of ``top_n`` and ``top_k`` (None: all)."""
        given = [n for n in (self.top_n, self.top_k) if n is not None]
        return min(given) if given else None


class RerankV2Request(_QueryAndDocuments):
    """``POST /v2/rerank`` (Cohere's v2 rerank API)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(
        None,
        min_length=1,
        description="model name (required by Cohere); the server's first model if omitted",
    )
    query: str = Field(
        ...,
        min_length=1,
        description="the search query (not blank)",
        json_schema_extra={"pattern": QUERY_PATTERN},
    )
    documents: list[str | DocumentObject] = Field(
        ...,
        min_length=1,
        description='texts to rerank; {"text": ...} objects are accepted too (Cohere v2 takes '
        "strings only)",
    )
    top_n: PositiveInt | None = Field(None, description="return only the best N results")
    max_tokens_per_doc: PositiveInt = Field(
        4096,
        description="documents are cut to their first N tokens (the model's tokenizer) before "
        "scoring",
    )
    normalize: Literal["none", "sigmoid"] = Field(
        "sigmoid",
        description="winnow extension: 'sigmoid' (the default here, as Cohere's scores are in "
        "[0, 1]) or 'none' for raw model scores",
    )


class ResultDocument(BaseModel):
    text: str


class RerankChunk(BaseModel):
    """One scored window of a document (``return_chunks``)."""

    index: int = Field(..., description="window number within the document (0 = first)")
    text: str = Field(..., description="the window's text: document[start:end]")
    start: int = Field(..., description="character offset of the window in the document")
    end: int = Field(..., description="character offset just past the window")
    relevance_score: float


class TEIChunk(BaseModel):
    """One scored window of a text (``return_chunks``)."""

    index: int = Field(..., description="window number within the text (0 = first)")
    text: str = Field(..., description="the window's text: text[start:end]")
    start: int
    end: int
    score: float


class RerankResult(BaseModel):
    index: int = Field(..., description="position of the document in the request")
    relevance_score: float
    document: ResultDocument | None = None
    truncated: bool | None = Field(
        None, description="part of the document was not scored (return_token_info)"
    )
    num_tokens: int | None = Field(
        None, description="tokens the model scored for the document (return_token_info)"
    )
    chunks: list[RerankChunk] | None = Field(
        None, description="the document's best windows, best first (return_chunks)"
    )


class RerankV2Result(BaseModel):
    index: int = Field(..., description="position of the document in the request")
    relevance_score: float


class Usage(BaseModel):
    search_units: int
    total_tokens: int


class ApiVersion(BaseModel):
    version: str = "2"


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: Meta


class RerankV2Response(BaseModel):
    id: str
    results: list[RerankV2Result]
    meta: Meta


class TEIRerankRequest(BaseModel):
    """``POST /rerank`` (Hugging Face text-embeddings-inference)."""

    model_config = ConfigDict(extra="ignore")
    query: str = Field(..., min_length=1, json_schema_extra={"pattern": QUERY_PATTERN})
    texts: list[str] = Field(..., min_length=1)
    raw_scores: StrictBool = Field(False, description="raw model scores instead of sigmoid ones")
    return_text: StrictBool = False
    truncate: StrictBool = Field(
        False, description="truncate over-long inputs instead of answering 413 (TEI default: false)"
    )
    truncation_direction: Literal["right", "Right"] = Field(
        "right", description="only right truncation is supported (documents are cut at the end)"
    )
    model: str | None = Field(
        None, min_length=1, description="winnow extension: which served model"
    )
    max_chunks_per_doc: PositiveInt | None = Field(None, description="winnow extension")
    return_token_info: StrictBool = Field(False, description="winnow extension")
    return_chunks: StrictBool = Field(False, description="winnow extension: " + RETURN_CHUNKS)
    chunks_per_doc: PositiveInt | None = Field(
        None, description="winnow extension: " + CHUNKS_PER_DOC
    )

    @field_validator("query")
    @classmethod
    def _check_query(cls, v: str) -> str:
        return _non_empty_query(v)

    @field_validator("texts")
    @classmethod
    def _check_texts(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            _valid_text(text, f"texts[{i}]")
        return v


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None
    truncated: bool | None = None
    num_tokens: int | None = None
    chunks: list[TEIChunk] | None = None


class ErrorResponse(BaseModel):
    """Every error: a message, its type and, for limits, the field and the limit."""

    error: str
    error_type: str
    field: str | None = None
    limit: int | None = None


class ModelDetails(BaseModel):
    """What the loaded model is (``winnow.rerankers.info.model_info``); None where unknown."""

    name: str = Field(..., description="the model as the operator named it (hub id, folder)")
    path: str | None = Field(None, description="what the name resolved to")
    kind: str | None = None
    backend: str | None = Field(None, description="hf, ollama or custom")
    architecture: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    parameters: int | None = None
    model_bytes: int | None = Field(None, description="parameters x bytes per parameter")
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    max_length: int | None = Field(None, description="longest input the server scores, tokens")
    dtype: str | None = None
    device: str | None = None
    quantization: str | None = Field(None, description="Ollama: the quantisation level")
    parameter_size: str | None = Field(None, description='Ollama: the size it states ("7.6B")')


class FallbackFields(BaseModel):
    """Set when a fallback serves under the model's name (``serving``; ``primary_error`` says why),
    or when ``--device-fallback`` moved it to the CPU (``device_fallback``, e.g. "cuda -> cpu")."""

    fallback: bool | None = None
    serving: str | None = None
    primary_error: str | None = None
    device_fallback: str | None = None


class ModelInfo(FallbackFields):
    id: str
    object: str = "model"
    owned_by: str = "winnow"
    model: str
    kind: str | None
    status: str
    default: bool
    details: ModelDetails | None = Field(None, description="once the model is loaded")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelInfo]


class HealthCheck(BaseModel):
    """A deep health check: a real inference on a few probe pairs, scores checked finite."""

    time: str = Field(..., description="when it started, ISO-8601 UTC")
    seconds: float
    ok: bool
    trigger: Literal["warmup", "interval", "probe"]
    pairs: int
    error: str | None = None


class ModelReadiness(FallbackFields):
    status: str
    model: str
    kind: str | None = None
    loaded: bool = False
    warmed: bool = False
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    warmup_seconds: float | None = None
    error: str | None = None
    parameters: int | None = None
    model_bytes: int | None = Field(None, description="parameters x bytes per parameter")
    last_check: HealthCheck | None = Field(None, description="the last deep health check")


class GpuMemory(BaseModel):
    allocated_bytes: int
    reserved_bytes: int
    peak_allocated_bytes: int


class ProcessMemory(BaseModel):
    resident_bytes: int | None = Field(None, description="resident memory now (Linux)")
    peak_resident_bytes: int | None = None
    gpu: dict[str, GpuMemory] | None = Field(None, description="per CUDA device; absent without")


class Readiness(BaseModel):
    ready: bool
    default_model: str | None
    models: dict[str, ModelReadiness]
    memory: ProcessMemory | None = None


class Health(BaseModel):
    status: str = "ok"
