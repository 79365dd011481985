"""Causal LMs from Hugging Face transformers: loading once, and the two computations the rerankers need.

* :func:`last_position_logits` — the logits of a few chosen tokens at the last position: the base
  model's last hidden state there times just those rows of the LM head. No full-vocabulary logits
  are computed at any position (a 150k-vocabulary head is most of a small model's compute).
* :class:`HFGenerationBackend` — what the listwise reranker asks of a model (``generate_batch`` and
  ``first_token_logits``), on transformers ``generate`` with left padding and token-budget batches.
"""

from __future__ import annotations

import logging

import numpy as np

from winnow.errors import ConfigError, ModelLoadError, WinnowError
from winnow.rerankers._imports import heavy_imports
from winnow.rerankers._tokens import pad_batch
from winnow.rerankers._torch import from_pretrained_kwargs, prepare_model
from winnow.rerankers.cache import MODELS
from winnow.rerankers.engine import batch_limits, run_batches

logger = logging.getLogger(__name__)


class AccelerateMissingError(WinnowError, ImportError):
    """``device_map`` was given and the ``accelerate`` package, which places the layers, is missing."""

    def __init__(self, device_map: str):
        super().__init__(
            f"device_map={device_map!r} needs the accelerate package, which is not installed. "
            "Install it with: pip install accelerate"
        )


def require_accelerate(device_map: str) -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise AccelerateMissingError(device_map) from exc


def load_causal_lm(path: str, device: str, dtype: str, device_map: str | None = None):
    """Load (model, tokenizer) of a causal LM, refusing models that are not one.

    ``device_map`` (``"auto"``, ``"balanced"``, ...) is handed to ``from_pretrained``, where
    accelerate spreads the layers over the devices there are (for models larger than one device);
    the model then stays where accelerate put it instead of being moved to ``device``.
    """
    with heavy_imports():
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if device_map is not None:
        if dtype == "int8":
            raise ConfigError("device_map cannot be combined with dtype='int8' (CPU quantisation)")
        require_accelerate(device_map)

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the config of {path!r}: {exc}") from exc
    architectures = config.architectures or []
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise ModelLoadError(
            f"{path!r} is not a causal language model (architectures={architectures}); "
            "the llm-* rerankers need a *ForCausalLM checkpoint"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ModelLoadError(f"{path!r} has no fast (tokenizer.json) tokenizer; winnow needs one")
    kwargs = from_pretrained_kwargs(dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as exc:
        if device_map is None:
            raise
        # transformers refuses a map it cannot place ("auto", "balanced", a device name or a dict)
        raise ConfigError(f"device_map={device_map!r} was refused by transformers: {exc}") from exc
    if model.base_model is model:
        raise ModelLoadError(
            f"{type(model).__name__} exposes no base model (base_model_prefix); winnow needs it "
            "to read the last hidden state without computing full-vocabulary logits"
        )
    if device_map is not None:
        return model.eval(), tokenizer
    return prepare_model(model, device, dtype), tokenizer


def shared_causal_lm(path: str, device: str, dtype: str, device_map: str | None = None):
    """The process-wide (model, tokenizer) for ``path``: pointwise and listwise rerankers share it."""
    key = ("causal-lm", path, device, dtype)
    if device_map is not None:
        key = (*key, device_map)
    return MODELS.get_or_create(key, lambda: load_causal_lm(path, device, dtype, device_map))


def input_device(model, device: str) -> str:
    """Where input ids go: ``device``, or the embeddings' device of a model accelerate placed."""
    if getattr(model, "hf_device_map", None):
        return str(model.get_input_embeddings().weight.device)
    return device


def single_token_id(tokenizer, text: str, option: str) -> int:
    """The id of ``text`` as exactly one token (as the model would produce it), or a ConfigError."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    vocab_id = tokenizer.convert_tokens_to_ids(text)
    if isinstance(vocab_id, int) and vocab_id != tokenizer.unk_token_id and vocab_id >= 0:
        return int(vocab_id)
    raise ConfigError(
        f"{option}={text!r} is not a single token of this tokenizer (it encodes to {len(ids)} "
        f"tokens: {tokenizer.convert_ids_to_tokens(ids)}); pick a word the vocabulary has whole"
    )


def pad_id_of(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


def head_rows(model, token_ids: list[int]):
    """(weight rows, bias or None) of the LM head for ``token_ids``, upcast to float32."""
    import torch

    head = model.get_output_embeddings()
    if head is None:
        raise ModelLoadError(f"{type(model).__name__} has no output embeddings (LM head)")
    weight, bias = head.weight, getattr(head, "bias", None)
    # int8 dynamic quantisation swaps Linear for a module whose weight/bias are methods.
    weight = weight() if callable(weight) else weight
    bias = bias() if callable(bias) else bias
    if weight.is_quantized:
        weight = weight.dequantize()
    index = torch.tensor(token_ids, device=weight.device)
    rows = weight.detach().index_select(0, index).float()
    return rows, (bias.detach().index_select(0, index).float() if bias is not None else None)


def last_position_logits(model, ids: np.ndarray, mask: np.ndarray, rows, bias, device, dtype):
    """float32 logits ``[batch, len(rows)]`` at the last position of left-padded ``ids``.

    Position ids are ``cumsum(mask) - 1`` so that a left-padded sequence sees the same positions as
    unpadded (transformers computes them from the sequence length, not the mask, when not given).
    """
    import torch

    input_ids = torch.from_numpy(ids).to(device)
    attention = torch.from_numpy(mask).to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model.base_model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False
        )
        hidden = out.last_hidden_state[:, -1].float()
    # with a device map the last layer and the LM head may sit on different devices
    logits = hidden @ rows.to(hidden.device).T
    if bias is not None:
        logits = logits + bias.to(hidden.device)
    config = model.config
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies the head's output
    if isinstance(scale, (int, float)):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 caps it
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.cpu().numpy()


class HFGenerationBackend:
    """Listwise backend on a transformers causal LM: batched greedy generation and first-token logits.

    Prompts are chat messages; they are rendered with the tokenizer's chat template when it has one,
    as plain text otherwise.
    """

    name = "hf"

    def __init__(self, model, tokenizer, device: str, dtype: str, max_length: int, options):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.pad = pad_id_of(tokenizer)
        self.max_tokens, self.max_batch_size = batch_limits(options, device)
        self.use_chat_template = bool(options.get("chat_template", True)) and bool(
            getattr(tokenizer, "chat_template", None)
        )
        self.device = input_device(model, device)

    def render(self, messages: list[dict], answer_prefix: str = "") -> str:
        from winnow.rerankers.llm.prompts import render_plain

        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = render_plain(messages)
        return text + answer_prefix

    def _encode(self, prompts: list[str]) -> list[list[int]]:
        # Chat templates carry their own special tokens; plain text gets the tokenizer's (BOS).
        encoded = self.tokenizer(prompts, add_special_tokens=not self.use_chat_template)
        seqs = encoded["input_ids"]
        for i, seq in enumerate(seqs):
            if len(seq) > self.max_length:
                logger.warning(
                    "listwise prompt %d has %d tokens, over max_length=%d: keeping the last %d",
                    i,
                    len(seq),
                    self.max_length,
                    self.max_length,
                )
                seqs[i] = seq[-self.max_length :]
        return seqs

    def generate_batch(self, messages: list[list[dict]], max_new_tokens: int) -> list[str]:
        import torch

        seqs = self._encode([self.render(m) for m in messages])
        lengths = np.array([len(s) + max_new_tokens for s in seqs])

        def forward(idx: np.ndarray) -> np.ndarray:
            ids, mask = pad_batch([seqs[i] for i in idx], self.pad, left=True)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=torch.from_numpy(ids).to(self.device),
                    attention_mask=torch.from_numpy(mask).to(self.device),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.pad,
                )
            new = out[:, ids.shape[1] :].cpu().tolist()
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            result = np.empty(len(idx), dtype=object)
            result[:] = texts
            return result

        texts, _ = run_batches(
            lengths,
            forward,
            max_tokens=self.max_tokens,
            max_batch_size=self.max_batch_size,
            device=self.device,
        )
        return list(texts)

    def identifier_token_ids(self, labels: list[str]) -> list[int]:
        return [single_token_id(self.tokenizer, label, "identifier") for label in labels]

    def first_token_logits(
        self, messages: list[list[dict]], answer_prefix: str, labels: list[list[str]]
    ) -> list[np.ndarray]:
        """Logits of each prompt's identifier tokens for the first token after ``answer_prefix``."""
        seqs = self._encode([self.render(m, answer_prefix) for m in messages])
        # Identifier lists are prefixes of one another (A, B, C...): score the longest once.
        all_labels = max(labels, key=len)
        rows, bias = head_rows(self.model, self.identifier_token_ids(all_labels))

        def forward(idx: np.ndarray) -> np.ndarray:
            ids, mask = pad_batch([seqs[i] for i in idx], self.pad, left=True)
            return last_position_logits(self.model, ids, mask, rows, bias, self.device, self.dtype)

        logits, _ = run_batches(
            np.array([len(s) for s in seqs]),
            forward,
            max_tokens=self.max_tokens,
            max_batch_size=self.max_batch_size,
            device=self.device,
        )
        return [logits[i, : len(lab)].astype(np.float32) for i, lab in enumerate(labels)]
