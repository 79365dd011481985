"""Skip the work a classification head throws away: in the last encoder layer only the first token.

A BERT/RoBERTa/XLM-R/ELECTRA sequence classifier reads nothing but the first token of the last
layer (the pooler or classification head takes ``hidden[:, 0]``). The last layer's queries,
attention output and feed-forward for every other position are computed and discarded. This module
replaces that layer with one that runs queries, attention output and feed-forward for the first
position only (keys and values still come from every position), which is the same arithmetic for the
number that matters and saves about a sixth of a 6-layer model's compute.

It is installed only after a self-check: a padded probe batch must give the same logits through the
patched model as through the original (within float rounding), otherwise the model is left as it was.
Written by hand because no library offers it: transformers always computes every position.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

#: Classifier heads that read only the first token of the last hidden state.
FIRST_TOKEN_HEADS = {
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
}


def _first_token_layer_class():
    import torch
    import torch.nn.functional as F

    class FirstTokenLayer(torch.nn.Module):
        """A BERT-style encoder layer evaluated for position 0 only; returns (batch, 1, hidden)."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            layer = self.layer
            sa = layer.attention.self
            batch, length, _ = hidden_states.shape
            heads, size = sa.num_attention_heads, sa.attention_head_size
            first = hidden_states[:, :1]
            q = sa.query(first).view(batch, 1, heads, size).transpose(1, 2)
            k = sa.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)
            v = sa.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
            mask = attention_mask
            if mask is not None and mask.dim() == 2:
                # FlashAttention-2 models pass the plain (batch, tokens) padding mask
                mask = mask[:, None, None, :].bool()
            if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
                mask = mask[:, :, :1, :]
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=getattr(sa, "scaling", size**-0.5)
            )
            ctx = ctx.transpose(1, 2).reshape(batch, 1, heads * size)
            attention_output = layer.attention.output(ctx, first)
            return layer.output(layer.intermediate(attention_output), attention_output)

    return FirstTokenLayer


def _encoder_layers(model):
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if layers is not None and len(layers) > 0 else None


def install_first_token_last_layer(model, tokenizer, device: str) -> bool:
    """Patch ``model`` in place when it is safe; return whether the patch is installed."""
    import torch

    if type(model).__name__ not in FIRST_TOKEN_HEADS:
        return False
    layers = _encoder_layers(model)
    if layers is None or getattr(model.config, "is_decoder", False):
        return False
    last = layers[-1]
    if not all(hasattr(last, a) for a in ("attention", "intermediate", "output")):
        return False
    probe = tokenizer(
        ["what is winnow", "a longer query about a boundary layer"],
        ["winnow separates grain from chaff, " * 3, "flow"],
        padding=True,
        return_tensors="pt",
    ).to(device)
    try:
        with torch.inference_mode():
            reference = model(**probe).logits.float()
            layers[-1] = _first_token_layer_class()(last)
            patched = model(**probe).logits.float()
    except Exception as exc:  # the architecture differs from what the patch expects
        layers[-1] = last
        logger.debug("first-token last layer not installed for %s: %s", type(model).__name__, exc)
        return False
    tolerance = 1e-4 * max(1.0, float(reference.abs().max()))
    if model.dtype != torch.float32:
        tolerance *= 100  # half precision: rounding differs between the two orders of operations
    if not torch.allclose(reference, patched, atol=tolerance, rtol=0):
        layers[-1] = last
        logger.debug("first-token last layer not installed: self-check mismatch")
        return False
    return True
