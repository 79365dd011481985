"""Prompt templates of the LLM rerankers.

Pointwise templates are split once into text pieces around the ``{query}`` and ``{document}`` slots,
so that the fixed pieces are tokenised once per reranker and each distinct query / document once per
call. Presets reproduce the prompts documented in the model cards:

* ``qwen3`` — Qwen3-Reranker: a system turn asking for "yes" or "no", a user turn with
  ``<Instruct>: ...\\n<Query>: ...\\n<Document>: ...`` and an empty ``<think>`` block; the score is
  ``logit("yes") - logit("no")`` (``sigmoid`` of it is the model card's probability).
* ``bge-gemma`` — bge-reranker-v2-gemma: ``A: {query}\\nB: {document}\\n`` followed by the prompt
  asking for 'Yes' or 'No'; the model card scores with ``logit("Yes")`` alone (``false_token=None``).
* ``chat`` — any instruct model (Gemma-it, Llama-3.x-Instruct, Mistral-Instruct...): the Qwen3
  question as one user turn, rendered with the tokenizer's own chat template with the assistant turn
  opened, so that the yes/no is read where the model's answer starts (:func:`chat_template_for`).

:func:`preset_for_model` picks the preset from the model's name when no template is given.

Listwise prompts follow RankZephyr (a system message and one user message listing the passages as
``[1] ... [n]``, answer ``[2] > [1] > ...``); the FIRST-style single-token mode uses letters
``[A] ... [T]`` as identifiers so that each is one token.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from winnow.errors import ConfigError

QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
BGE_GEMMA_INSTRUCTION = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)
BGE_GEMMA_TEMPLATE = "A: {query}\nB: {document}\n{instruction}"

#: name -> (template, default instruction, true token, false token or None)
PRESETS: dict[str, tuple[str, str, str, str | None]] = {
    "qwen3": (QWEN3_TEMPLATE, QWEN3_INSTRUCTION, "yes", "no"),
    "bge-gemma": (BGE_GEMMA_TEMPLATE, BGE_GEMMA_INSTRUCTION, "Yes", None),
}
DEFAULT_PRESET = "qwen3"
#: The template that renders the prompt with the tokenizer's chat template (see chat_template_for).
CHAT = "chat"

#: Known reranker checkpoints, by a piece of their (lower-cased) name, and the preset they need.
KNOWN_RERANKERS: dict[str, str] = {
    "bge-reranker-v2-gemma": "bge-gemma",
    "qwen3-reranker": "qwen3",
}

CHAT_USER_TURN = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".\n'
    "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
)
_QUERY_MARK, _DOCUMENT_MARK = "\x00WINNOW-QUERY\x00", "\x00WINNOW-DOCUMENT\x00"


def preset_for_model(model: str) -> str | None:
    """The preset a known reranker checkpoint needs (by its hub id or folder name), else None."""
    name = model.replace("\\", "/").rstrip("/").lower()
    for piece, preset in KNOWN_RERANKERS.items():
        if piece in name:
            return preset
    return None


def chat_template_for(
    tokenizer,
    instruction: str | None = None,
    true_token: str | None = None,
    false_token: str | None = "",
) -> PointwiseTemplate:
    """The pointwise question as one user turn, rendered with ``tokenizer``'s chat template.

    The generation prompt is added, so the prompt ends where the assistant's answer starts and the
    next-token yes/no logits are read there. Only a user turn is sent (Gemma's template refuses a
    system turn).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "template='chat' needs a tokenizer with a chat template, and this one has none; "
            f"use one of {', '.join(PRESETS)} or a string with {{query}} and {{document}}"
        )
    user = CHAT_USER_TURN.format(
        instruction=QWEN3_INSTRUCTION if instruction is None else instruction,
        query=_QUERY_MARK,
        document=_DOCUMENT_MARK,
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    if text.count(_QUERY_MARK) != 1 or text.count(_DOCUMENT_MARK) != 1:
        raise ConfigError(
            "the tokenizer's chat template does not keep the user turn as written; pass a template"
        )
    escaped = text.replace("{", "{{").replace("}", "}}")
    escaped = escaped.replace(_QUERY_MARK, "{query}").replace(_DOCUMENT_MARK, "{document}")
    return pointwise_template(escaped, None, true_token, false_token)


@dataclass(frozen=True)
class PointwiseTemplate:
    """A prompt cut into ``prefix {query} middle {document} suffix``.

    ``query_lead`` / ``document_lead`` are the spaces that precede a slot in the template: they are
    tokenised with the slot's text (byte-level BPE attaches a space to the next word), so that the
    pieces tokenise like the whole prompt does.
    """

    prefix: str
    middle: str
    suffix: str
    query_lead: str
    document_lead: str
    true_token: str
    false_token: str | None

    def render(self, query: str, document: str) -> str:
        """The whole prompt as one string (for servers that take text, and for reference checks)."""
        return (
            f"{self.prefix}{self.query_lead}{query}{self.middle}{self.document_lead}"
            f"{document}{self.suffix}"
        )


def _split_lead(piece: str) -> tuple[str, str]:
    stripped = piece.rstrip(" ")
    return stripped, piece[len(stripped) :]


def pointwise_template(
    template: str | None = None,
    instruction: str | None = None,
    true_token: str | None = None,
    false_token: str | None = "",
) -> PointwiseTemplate:
    """Build a template from a preset name or a string with ``{query}`` and ``{document}`` slots.

    ``{instruction}`` in the template is replaced by ``instruction`` (the preset's default when
    omitted). ``false_token=""`` means "the preset's default"; ``None`` scores with the true token's
    logit alone.
    """
    name = template or DEFAULT_PRESET
    if name == CHAT:
        raise ConfigError("template='chat' is rendered with a tokenizer: use chat_template_for")
    if name in PRESETS:
        text, default_instruction, default_true, default_false = PRESETS[name]
    elif "{query}" in name and "{document}" in name:
        text, default_instruction, default_true, default_false = name, "", "yes", "no"
    else:
        raise ConfigError(
            f"template={template!r} is neither a preset ({', '.join([*PRESETS, CHAT])}) nor a "
            "string with {query} and {document} placeholders"
        )
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    unknown = fields - {"query", "document", "instruction"}
    if unknown:
        raise ConfigError(
            f"template has unknown placeholders {sorted(unknown)}; allowed: query, document, "
            "instruction (write literal braces as {{ and }})"
        )
    for slot in ("{query}", "{document}"):
        if text.count(slot) != 1:
            raise ConfigError(f"template must contain {slot} exactly once")
    if text.index("{query}") > text.index("{document}"):
        raise ConfigError("template must put {query} before {document}")
    # Fill {instruction} (and unescape {{ }}) while keeping the two slots as markers.
    filled = text.format(
        instruction=instruction if instruction is not None else default_instruction,
        query="\x00Q\x00",
        document="\x00D\x00",
    )
    before, rest = filled.split("\x00Q\x00")
    middle, suffix = rest.split("\x00D\x00")
    prefix, query_lead = _split_lead(before)
    middle, document_lead = _split_lead(middle)
    false = default_false if false_token == "" else false_token
    return PointwiseTemplate(
        prefix=prefix,
        middle=middle,
        suffix=suffix,
        query_lead=query_lead,
        document_lead=document_lead,
        true_token=true_token or default_true,
        false_token=false,
    )


# -- listwise ----------------------------------------------------------------------------------

LISTWISE_SYSTEM = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy "
    "to the query."
)
LETTERS = string.ascii_uppercase


def identifiers(count: int, style: str) -> list[str]:
    """Passage identifiers: ``1..n`` (``numbers``) or ``A..Z`` (``letters``, single tokens)."""
    if style == "numbers":
        return [str(i + 1) for i in range(count)]
    if style == "letters":
        if count > len(LETTERS):
            raise ConfigError(
                f"letter identifiers allow at most {len(LETTERS)} passages per window"
            )
        return list(LETTERS[:count])
    raise ConfigError(f"identifier style {style!r} is not 'numbers' or 'letters'")


def listwise_messages(query: str, passages: list[str], style: str = "numbers") -> list[dict]:
    """Chat messages asking the model to order ``passages`` (RankZephyr's wording)."""
    ids = identifiers(len(passages), style)
    n = len(passages)
    listing = "\n".join(f"[{i}] {p}" for i, p in zip(ids, passages))
    example = f"[{ids[-1]}] > [{ids[0]}]" if n > 1 else f"[{ids[0]}]"
    user = (
        f"I will provide you with {n} passages, each indicated by an identifier []. Rank the "
        f"passages based on their relevance to the search query: {query}.\n\n{listing}\n\n"
        f"Search Query: {query}.\nRank the {n} passages above based on their relevance to the "
        "search query. All the passages should be included and listed using identifiers, in "
        f"descending order of relevance. The output format should be [] > [], e.g., {example}. "
        "Only respond with the ranking results, do not say any word or explain."
    )
    return [{"role": "system", "content": LISTWISE_SYSTEM}, {"role": "user", "content": user}]


def render_plain(messages: list[dict]) -> str:
    """Messages as plain text, for tokenizers without a chat template."""
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nAnswer: "
