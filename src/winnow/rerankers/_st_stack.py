"""A sentence-transformers model folder's module stack, read from its files and reproduced in torch.

``read_stack(folder)`` reads ``modules.json`` and each module's config (the Transformer's
``sentence_bert_config.json``, ``Pooling``'s and ``Dense``'s ``config.json``,
``config_sentence_transformers.json`` for the default prompt) into a frozen :class:`Stack`, or raises
:class:`UnsupportedStack` naming what it cannot reproduce: any module other than Transformer, Pooling,
Dense, Normalize and Dropout, a Transformer with a task, modality, query expansion or loading
arguments of its own, a module reading or writing other features than the sentence embedding.
``pool`` and ``Stack.apply_head`` then compute what sentence-transformers' ``Pooling``, ``Dense`` and
``Normalize`` compute, with the same operations in the same order (float32 accumulation as
``Pooling`` does), so that ``winnow.rerankers.text_encoder`` can run the transformer itself.

Written by hand because sentence-transformers offers no way to run its modules on token embeddings
computed elsewhere without its own tokenisation and batching (``SentenceTransformer.encode``), which
is what winnow's engine replaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Pooling modes reproduced (all of sentence-transformers' ``Pooling.POOLING_MODES``).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: Legacy boolean keys of ``1_Pooling/config.json``, in the concatenation order of ``Pooling``.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
#: Transformer config keys that, at these values, change nothing about a text embedding.
_NEUTRAL_TRANSFORMER_KEYS = {
    "transformer_task": ("feature-extraction",),
    "module_output_name": ("token_embeddings",),
    "query_length": (None,),
    "document_length": (None,),
    "query_expansion": (None,),
    "unpad_inputs": (None, True, False),  # flash-attention unpadding only: same numbers
    "processing_kwargs": (None, {}),
    "model_args": (None, {}),
    "model_kwargs": (None, {}),
    "tokenizer_args": (None, {}),
    "processor_kwargs": (None, {}),
    "config_args": (None, {}),
    "config_kwargs": (None, {}),
}
_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class UnsupportedStack(Exception):
    """The model folder's module stack is not one winnow reproduces; the message says why."""


@dataclass(frozen=True)
class DenseSpec:
    """A ``Dense`` module: a Linear layer (weights in ``path``), an activation, maybe a residual."""

    path: str
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a torch.nn.Module class path such as torch.nn.modules.activation.Tanh
    use_residual: bool = False


@dataclass(frozen=True)
class Stack:
    """What a sentence-transformers model computes after its transformer, read from its files."""

    transformer_path: str
    max_seq_length: int | None
    do_lower_case: bool
    pooling: tuple[str, ...]
    include_prompt: bool
    #: after pooling, in order: ("dense", DenseSpec) | ("normalize", None); Dropout is the identity
    head: tuple[tuple[str, DenseSpec | None], ...]
    default_prompt: str | None

    def identity(self) -> dict[str, Any]:
        """What the embeddings depend on besides the weights (for cache keys)."""
        return {
            "pooling": list(self.pooling),
            "include_prompt": self.include_prompt,
            "head": [
                step if spec is None else f"{step}:{spec.out_features}" for step, spec in self.head
            ],
            "do_lower_case": self.do_lower_case,
            "max_seq_length": self.max_seq_length,
            "default_prompt": self.default_prompt,
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedStack(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UnsupportedStack(f"{path} does not hold a JSON object")
    return data


def _module_name(entry: Any, where: str) -> str:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if not isinstance(kind, str) or not kind.startswith("sentence_transformers."):
        raise UnsupportedStack(
            f"{where}: module type {kind!r} is not a sentence-transformers module"
        )
    return kind.rsplit(".", 1)[-1]


def read_stack(folder: str | Path) -> Stack:
    """The module stack of a sentence-transformers model folder, or ``UnsupportedStack``."""
    root = Path(folder)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise UnsupportedStack(f"{root} has no modules.json (not a sentence-transformers folder)")
    try:
        entries = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedStack(f"cannot read {modules_file}: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise UnsupportedStack(f"{modules_file} lists no modules")
    entries = sorted(entries, key=lambda e: e.get("idx", 0) if isinstance(e, dict) else 0)
    names = [_module_name(e, f"{modules_file} entry {i}") for i, e in enumerate(entries)]
    if names[0] != "Transformer":
        raise UnsupportedStack(f"{modules_file}: the first module is {names[0]}, not Transformer")
    if "Pooling" not in names[1:2]:
        raise UnsupportedStack(f"{modules_file}: the Transformer is not followed by Pooling")
    paths = [root / str(e.get("path", "")) for e in entries]
    max_seq_length, lower = _read_transformer(paths[0])
    pooling, include_prompt = _read_pooling(paths[1] / "config.json")
    head: list[tuple[str, DenseSpec | None]] = []
    for name, path in zip(names[2:], paths[2:]):
        if name == "Normalize":
            config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
            for key in ("module_input_name", "module_output_name"):
                if config.get(key) not in (None, "sentence_embedding"):
                    raise UnsupportedStack(f"{path}: Normalize {key}={config[key]!r}")
            head.append(("normalize", None))
        elif name == "Dense":
            head.append(("dense", _read_dense(path)))
        elif name != "Dropout":
            raise UnsupportedStack(f"{modules_file}: module {name} is not reproduced")
    return Stack(
        transformer_path=str(paths[0]),
        max_seq_length=max_seq_length,
        do_lower_case=lower,
        pooling=pooling,
        include_prompt=include_prompt,
        head=tuple(head),
        default_prompt=_default_prompt(root),
    )


def _read_transformer(path: Path) -> tuple[int | None, bool]:
    config: dict[str, Any] = {}
    for name in _TRANSFORMER_CONFIGS:
        if (path / name).is_file():
            config = _read_json(path / name)
            break
    known = {*_NEUTRAL_TRANSFORMER_KEYS, "max_seq_length", "do_lower_case", "modality_config"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UnsupportedStack(f"{path}: Transformer config keys {unknown} are not reproduced")
    for key, neutral in _NEUTRAL_TRANSFORMER_KEYS.items():
        if key in config and config[key] not in neutral:
            raise UnsupportedStack(f"{path}: Transformer {key}={config[key]!r} is not reproduced")
    if config.get("modality_config", _TEXT_MODALITY) != _TEXT_MODALITY:
        raise UnsupportedStack(f"{path}: Transformer modality_config {config['modality_config']!r}")
    max_seq = config.get("max_seq_length")
    if max_seq is not None and (isinstance(max_seq, bool) or not isinstance(max_seq, int)):
        raise UnsupportedStack(f"{path}: max_seq_length={max_seq!r} is not a number of tokens")
    return max_seq, bool(config.get("do_lower_case", False))


def _read_pooling(path: Path) -> tuple[tuple[str, ...], bool]:
    config = _read_json(path)
    mode = config.get("pooling_mode")
    if mode is None:  # the legacy format: one boolean per mode (none set means mean)
        mode = [m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    bad = [m for m in modes if m not in POOLING_MODES]
    if not modes or bad:
        raise UnsupportedStack(f"{path}: pooling mode {mode!r} is not one of {POOLING_MODES}")
    return modes, bool(config.get("include_prompt", True))


def _read_dense(path: Path) -> DenseSpec:
    config = _read_json(path / "config.json")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise UnsupportedStack(f"{path}: Dense {key}={config[key]!r}")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if not isinstance(activation, str) or not activation.startswith("torch."):
        raise UnsupportedStack(f"{path}: Dense activation {activation!r} is not a torch module")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise UnsupportedStack(f"{path}: Dense weights ({' or '.join(_WEIGHT_FILES)}) not found")
    try:
        return DenseSpec(
            path=str(path),
            in_features=int(config["in_features"]),
            out_features=int(config["out_features"]),
            bias=bool(config.get("bias", True)),
            activation=activation,
            use_residual=bool(config.get("use_residual", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedStack(f"{path}: Dense config {config!r}: {exc}") from exc


def _default_prompt(root: Path) -> str | None:
    path = root / "config_sentence_transformers.json"
    if not path.is_file():
        return None
    config = _read_json(path)
    name = config.get("default_prompt_name")
    if name is None:
        return None
    prompts = config.get("prompts") or {}
    if name not in prompts:
        raise UnsupportedStack(f"{path}: default_prompt_name {name!r} is not among the prompts")
    return prompts[name]


# -- the computation ------------------------------------------------------------------------------
def load_dense(spec: DenseSpec, device: str):
    """The ``Dense`` module as a float32 torch callable: ``linear``, activation, residual."""
    import importlib

    import torch

    module_name, _, class_name = spec.activation.rpartition(".")
    try:
        activation_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnsupportedStack(f"{spec.path}: activation {spec.activation!r}: {exc}") from exc
    if not (isinstance(activation_class, type) and issubclass(activation_class, torch.nn.Module)):
        raise UnsupportedStack(f"{spec.path}: activation {spec.activation!r} is not a torch module")
    weights_file = next(
        Path(spec.path) / f for f in _WEIGHT_FILES if (Path(spec.path) / f).is_file()
    )
    if weights_file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights_file))
    else:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    module = torch.nn.Module()
    module.linear = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    if spec.use_residual and spec.in_features != spec.out_features:
        module.residual = torch.nn.Linear(spec.in_features, spec.out_features, bias=False)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UnsupportedStack(f"{weights_file}: {exc}") from exc
    module = module.eval().to(device=device, dtype=torch.float32)
    activation = activation_class()

    def dense(x):
        out = activation(module.linear(x))
        if spec.use_residual:
            out = out + (x if spec.in_features == spec.out_features else module.residual(x))
        return out

    dense.module = module  # its weights, for parameters()
    return dense


def pool(token_embeddings, attention_mask, modes: tuple[str, ...], prompt_length: int = 0):
    """``Pooling._forward_padded`` for right-padded batches: the modes' vectors, concatenated.

    ``token_embeddings`` is (batch, tokens, dim), already float32; ``prompt_length`` tokens at the
    start of each row are left out (``include_prompt=False``), as sentence-transformers does.
    """
    import torch

    original_mask = attention_mask
    if prompt_length:
        attention_mask = attention_mask.clone()
        attention_mask[:, :prompt_length] = 0
    dtype = token_embeddings.dtype
    out = []
    mean_sum = mean_count = None
    for mode in modes:
        if mode == "cls":
            first = attention_mask.to(torch.int).argmax(dim=1)
            index = first.unsqueeze(-1).unsqueeze(1).expand(-1, 1, token_embeddings.shape[-1])
            out.append(torch.gather(token_embeddings, 1, index).squeeze(1))
        elif mode == "max":
            mask = attention_mask.unsqueeze(-1).expand_as(token_embeddings).to(dtype)
            out.append(token_embeddings.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mask = attention_mask.unsqueeze(-1).to(dtype)
                mean_sum = (token_embeddings * mask).sum(dim=1, dtype=dtype)
                mean_count = torch.clamp(mask.sum(dim=1, dtype=dtype), min=1e-9)
            out.append(mean_sum / (mean_count if mode == "mean" else torch.sqrt(mean_count)))
        elif mode == "weightedmean":
            mask = attention_mask.unsqueeze(-1).to(dtype)
            weights = torch.arange(
                1, token_embeddings.shape[1] + 1, device=token_embeddings.device, dtype=dtype
            ).view(1, -1, 1)
            weights = weights - original_mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)
            weighted = mask * weights
            total = (token_embeddings * weighted).sum(dim=1)
            out.append(total / torch.clamp(weighted.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            length = token_embeddings.shape[1]
            values, indices = attention_mask.flip(1).max(1)
            indices = torch.where(values == 0, length - 1, indices)
            index = (length - indices - 1).unsqueeze(-1).unsqueeze(1)
            index = index.expand(-1, 1, token_embeddings.shape[-1])
            mask = attention_mask.unsqueeze(-1).expand_as(token_embeddings).to(dtype)
            out.append(torch.gather(token_embeddings * mask, 1, index).squeeze(dim=1))
        else:  # pragma: no cover - read_stack refuses other modes
            raise UnsupportedStack(f"pooling mode {mode!r}")
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)
