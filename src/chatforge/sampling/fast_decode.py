"""A lean decoder for Llama-family models on CPU: transformers' Llama computation for a prefill and
one-token steps, with less work around the matrix products and cheaper products.

Why it exists. Decoding 8 rows of a ~10M model on CPU is dominated by eight-row matrix products.
`F.linear` goes to MKL's `sgemm`, which re-packs the whole weight matrix into its panel layout on
every call (for eight rows that costs about as much as the product) and, on this project's AMD CPUs,
neither uses AVX-512 nor gains from a second thread at eight rows. Here every linear is packed once
per weight version with oneDNN (`torch.ops.mkldnn._reorder_linear_weight`, the kernels
`torch.compile` uses for frozen CPU linears) and multiplied with `_linear_pointwise` (bench/decode_kernels.py
times both). Without oneDNN, MKL's packed sgemm (bit-identical to `F.linear`) is used, and plain
`F.linear` without either. Around the products: q/k/v and gate/up are one product each; the KV cache
is preallocated (one write per layer and step instead of a growing concatenation); the layers run as
plain tensor ops, with no module dispatch, mask building or cache bookkeeping per step; the prefill
packs the prompts without their padding.

Exactness. The ops are transformers' ops (RMSNorm in float32, rotary tables from the model's own
rotary module, attention of each key/value head's query group as in transformers' `pack_gqa`),
but the products accumulate in other orders (oneDNN, the packed prefill, attention as two products
instead of SDPA), so logits differ from the model's forward in the last bits (about 1e-6 relative):
greedy tokens can differ from `model.generate` only where the two best logits tie to that precision.
Tests compare prefill and step logits and the cache with the forward, and greedy tokens with
`model.generate`, for every architecture below.

Scope. Llama, Mistral and Qwen2 checkpoints (same layer layout; Qwen2's q/k/v biases included) on
CPU in float32 or bfloat16, with plain `nn.Linear` layers (a PEFT-wrapped model is decoded by
`transformers`), SiLU MLPs and position-independent rotary tables. `unsupported_reason(model)` names
the first condition a model fails; the sampler then decodes with the `transformers` forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
# Rope types whose cos/sin for a position do not depend on the sequence length seen so far.
STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
# Prompts prefilled together as one packed sequence, in real tokens: bounds the (tokens x tokens) mask.
PREFILL_TOKENS = 2048


LinearKernel = Literal["onednn", "mkl", "plain"]


def available_kernel() -> LinearKernel:
    """The fastest packed linear this torch build has."""
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "onednn"
    if torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
        return "mkl"
    return "plain"


def unsupported_reason(model, total_length: int | None = None) -> str | None:
    """Why the fast path cannot decode `model` (None when it can); `total_length` = prompt + new tokens."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {config.model_type!r} (fast decoding covers {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"the model is on {device} (fast decoding is for CPU; use backend=vllm on GPUs)"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {config.hidden_act!r} (fast decoding implements silu)"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and (total_length is None or total_length >= window):
        return f"sliding-window attention (window {window}) over a longer sequence"
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in STATIC_ROPE_TYPES:
        return f"rope type {getattr(rotary, 'rope_type', None)!r} (fast decoding needs a static rotary table)"
    for name, module in model.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")):
            if type(module) is not nn.Linear:
                return f"{name} is a {type(module).__name__}, not a plain Linear (e.g. LoRA adapters not merged)"
    if getattr(model.lm_head, "bias", None) is not None:
        return "lm_head has a bias"
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return "logit scaling or soft-capping"
    return None


class PackedLinear:
    """`F.linear(x, weight, bias)` with the weight packed once for small-batch products.

    Several linears that read the same input (q/k/v, gate/up) are packed as one, output columns
    concatenated: one product instead of three. `kernel`: "onednn" (fast; last-bit differences from
    `F.linear`), "mkl" (bit-identical to `F.linear`), "plain" (`F.linear` itself).
    """

    def __init__(self, linears: list[nn.Linear], batch_size: int, kernel: LinearKernel):
        weights = [m.weight.detach() for m in linears]
        self.weight = weights[0] if len(weights) == 1 else torch.cat(weights)
        biases = [m.bias for m in linears]
        self.bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        self.splits = [w.shape[0] for w in weights]
        # Both libraries build the packed layout for one batch size; MKL needs that same value at every call.
        self.batch_size = batch_size
        self.kernel = kernel if self.weight.dtype in (torch.float32, torch.bfloat16) else "plain"
        if self.kernel == "mkl" and self.weight.dtype != torch.float32:
            self.kernel = "plain"
        try:
            if self.kernel == "onednn":
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, batch_size)
            elif self.kernel == "mkl":
                self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, batch_size)
        except RuntimeError:  # a build whose library lacks this shape or dtype: plain products still work
            self.kernel = "plain"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.kernel == "mkl":
            return torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, self.batch_size)
        return F.linear(x, self.weight, self.bias)


@dataclass
class _Layer:
    qkv: PackedLinear
    o: PackedLinear
    gate_up: PackedLinear
    down: PackedLinear
    norm_attn: torch.Tensor
    norm_mlp: torch.Tensor
    eps_attn: float
    eps_mlp: float


@dataclass
class DecodeState:
    """The preallocated KV cache of one decode batch.

    Keys are stored transposed, `keys[l][b, :, :, j]` for column j, so that the scores of a step are one
    product with the first `length` columns (a strided view, no copy).
    """

    keys: list[torch.Tensor]  # per layer (rows, kv heads, head dim, capacity)
    values: list[torch.Tensor]  # per layer (rows, kv heads, capacity, head dim)
    bias: torch.Tensor  # (rows, kv heads, 1, capacity): 0 where a row attends to the column, -inf where not
    length: int  # columns filled so far (all rows advance together)


class FastDecoder:
    """Packed weights of one model, rebuilt when its parameters change (e.g. between RL steps)."""

    def __init__(self, model, kernel: LinearKernel | None = None):
        self.model = model
        self.kernel = kernel or available_kernel()
        self._stamp: tuple | None = None
        self._layers: list[_Layer] = []

    def _weights_stamp(self) -> tuple:
        # In-place optimizer updates bump `_version`; a reassigned parameter changes `data_ptr`.
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def prepare(self, batch_size: int) -> None:
        """Pack every linear for about `batch_size` rows (again only when a parameter changed since)."""
        stamp = self._weights_stamp()
        if stamp == self._stamp:  # packed for another batch size still multiplies any number of rows
            return
        model, inner = self.model, self.model.model
        attn0 = inner.layers[0].self_attn
        self.heads, self.kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
        self.head_dim, self.scaling = attn0.head_dim, attn0.scaling
        self._layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self._layers.append(_Layer(
                PackedLinear([attn.q_proj, attn.k_proj, attn.v_proj], batch_size, self.kernel),
                PackedLinear([attn.o_proj], batch_size, self.kernel),
                PackedLinear([mlp.gate_proj, mlp.up_proj], batch_size, self.kernel),
                PackedLinear([mlp.down_proj], batch_size, self.kernel),
                layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach(),
                _eps(layer.input_layernorm), _eps(layer.post_attention_layernorm),
            ))
        self.embed = inner.embed_tokens.weight.detach()
        self.norm, self.norm_eps = inner.norm.weight.detach(), _eps(inner.norm)
        self.head = PackedLinear([model.lm_head], batch_size, self.kernel)
        self._stamp = stamp
        self._rope_len = 0

    def _rope(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed-sin tables for positions 0..positions-1 from the model's own rotary module.

        transformers rotates as `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = cat(-x2, x1)`.
        That is `x * cos + roll(x, half) * cat(-sin1, sin2)`: the same products (a sign moved from x to
        sin is exact), two ops fewer per rotation.
        """
        if positions > self._rope_len:
            dummy = torch.zeros(1, dtype=self.embed.dtype, device=self.embed.device)
            cos, sin = self.model.model.rotary_emb(dummy, torch.arange(positions, device=self.embed.device)[None])
            half = sin.shape[-1] // 2
            signed = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
            self._cos, self._sin, self._rope_len = cos[0], signed, positions
        return self._cos, self._sin

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, capacity: int
    ) -> tuple[DecodeState, torch.Tensor]:
        """Run left-padded prompts (rows x width) through the model into a cache of `capacity` columns.

        Returns the cache, laid out like the padded batch (row b's prompt in its last columns, the
        padding columns never attended), and the logits (rows, vocab) at every row's last prompt token.
        The padding itself is not computed: the prompts of up to `PREFILL_TOKENS` real tokens at a time
        are packed into one sequence, each attending causally to its own tokens only.
        """
        rows, width = input_ids.shape
        valid = attention_mask.bool()
        keys = [self.embed.new_zeros((rows, self.kv_heads, self.head_dim, capacity)) for _ in self._layers]
        values = [self.embed.new_zeros((rows, self.kv_heads, capacity, self.head_dim)) for _ in self._layers]
        self._rope(int(positions.max()) + 1)
        logits, start, lengths = [], 0, valid.sum(-1).tolist()
        while start < rows:  # consecutive rows, at least one, up to PREFILL_TOKENS real tokens
            stop, tokens = start + 1, lengths[start]
            while stop < rows and tokens + lengths[stop] <= PREFILL_TOKENS:
                tokens += lengths[stop]
                stop += 1
            chunk = slice(start, stop)
            logits.append(self._prefill_packed(input_ids[chunk], valid[chunk], positions[chunk], keys, values, chunk))
            start = stop
        bias = torch.full((rows, capacity), float("-inf"), dtype=self.embed.dtype, device=valid.device)
        bias[:, :width].masked_fill_(valid, 0.0)
        # one copy per key/value head, so that a step adds it inside one batched product (`baddbmm`)
        bias = bias[:, None, None, :].repeat(1, self.kv_heads, 1, 1)
        return DecodeState(keys, values, bias, width), torch.cat(logits)

    def _prefill_packed(self, input_ids, valid, positions, keys, values, chunk: slice) -> torch.Tensor:
        """Prefill the rows `chunk` as one packed sequence; write their keys/values into the buffers."""
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        rows, width = input_ids.shape
        row_of = torch.arange(chunk.start, chunk.stop, device=valid.device)[:, None].expand(rows, width)[valid]
        column_of = torch.arange(width, device=valid.device)[None].expand(rows, width)[valid]
        pos = positions[valid]
        tokens = pos.shape[0]
        last = valid.sum(-1).cumsum(0) - 1  # each row's last token in the packed order
        same_prompt = row_of[:, None] == row_of[None, :]
        mask = (same_prompt & (pos[:, None] >= pos[None, :]))[None, None]  # (1, 1, tokens, tokens)
        cos, sin = self._cos[pos][None], self._sin[pos][None]  # (1, tokens, head dim)
        hidden = F.embedding(input_ids[valid], self.embed)  # (tokens, hidden)
        final = len(self._layers) - 1
        for index, (layer, k_buf, v_buf) in enumerate(zip(self._layers, keys, values)):
            x = _rms_norm(hidden, layer.norm_attn, layer.eps_attn)
            qkv = layer.qkv(x).view(tokens, heads + 2 * kv_heads, head_dim).transpose(0, 1)
            qk = _rotate(qkv[: heads + kv_heads], cos, sin)  # q and k rotated together
            q, k, v = qk[:heads], qk[heads:], qkv[heads + kv_heads :]
            k_buf.permute(0, 3, 1, 2)[row_of, column_of] = k.transpose(0, 1)  # (tokens, kv heads, head dim)
            v_buf.transpose(1, 2)[row_of, column_of] = v.transpose(0, 1)
            if index == final:  # only each row's last token is needed from here on
                q, mask, hidden = q[:, last], mask[:, :, last], hidden[last]
            out = F.scaled_dot_product_attention(
                q[None], k[None], v[None], attn_mask=mask, scale=self.scaling, enable_gqa=heads != kv_heads
            )[0]  # (heads, queries, head dim)
            hidden = hidden + layer.o(out.transpose(0, 1).reshape(q.shape[1], heads * head_dim))
            x = _rms_norm(hidden, layer.norm_mlp, layer.eps_mlp)
            gate, up = layer.gate_up(x).split(layer.gate_up.splits, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        return self.head(_rms_norm(hidden, self.norm, self.norm_eps))

    @staticmethod
    def repeat(state: DecodeState, n: int) -> DecodeState:
        """Each row n times in a row (n samples of one prefilled prompt)."""
        return DecodeState(
            [k.repeat_interleave(n, dim=0) for k in state.keys], [v.repeat_interleave(n, dim=0) for v in state.values],
            state.bias.repeat_interleave(n, dim=0), state.length,
        )

    @staticmethod
    def select(state: DecodeState, keep: torch.Tensor) -> DecodeState:
        """Keep only the rows `keep` (finished samples leave the batch)."""
        return DecodeState(
            [k.index_select(0, keep) for k in state.keys], [v.index_select(0, keep) for v in state.values],
            state.bias.index_select(0, keep), state.length,
        )

    def step(self, state: DecodeState, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab) after feeding each row's `token_ids` at its `positions`; fills one column."""
        rows, t = token_ids.shape[0], state.length
        if t >= state.bias.shape[-1]:
            raise RuntimeError("fast decode: the KV buffer is full")  # the sampler sizes it; a bug if reached
        cos_table, sin_table = self._rope(int(positions.max()) + 1)
        cos, sin = cos_table[positions][:, None], sin_table[positions][:, None]  # (rows, 1, head dim)
        state.bias[..., t] = 0.0
        batch = rows * self.kv_heads  # attention runs as (row, key/value head) batches
        bias = state.bias.view(batch, 1, -1)[..., : t + 1]
        groups = self.heads // self.kv_heads
        hidden = F.embedding(token_ids, self.embed)
        for layer, keys, values in zip(self._layers, state.keys, state.values):
            x = _rms_norm(hidden, layer.norm_attn, layer.eps_attn)
            qkv = layer.qkv(x).view(rows, self.heads + 2 * self.kv_heads, self.head_dim)
            qk = _rotate(qkv[:, : self.heads + self.kv_heads], cos, sin)  # q and k rotated together
            q, k = qk[:, : self.heads], qk[:, self.heads :]
            keys[..., t] = k
            values[:, :, t] = qkv[:, self.heads + self.kv_heads :]
            # One query token: its `groups` heads per key/value head are `groups` query rows of that head
            # (transformers' `pack_gqa`), so the keys are never repeated. Plain products and a softmax:
            # for one query row SDPA's CPU kernel cost more in profiles.
            q = q.reshape(batch, groups, self.head_dim)
            scores = torch.baddbmm(bias, q, keys.view(batch, self.head_dim, -1)[..., : t + 1], alpha=self.scaling)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.bmm(probs, values.view(batch, -1, self.head_dim)[:, : t + 1])
            hidden = hidden + layer.o(out.reshape(rows, self.heads * self.head_dim))
            x = _rms_norm(hidden, layer.norm_mlp, layer.eps_mlp)
            gate, up = layer.gate_up(x).split(layer.gate_up.splits, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        state.length = t + 1
        return self.head(_rms_norm(hidden, self.norm, self.norm_eps))


def _eps(norm: nn.Module) -> float:
    return getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:  # one fused op, same result as the steps below in float32
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # transformers' LlamaRMSNorm, op for op: statistics in float32, scale in the input dtype.
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """transformers' `x * cos + rotate_half(x) * sin`, with `sin_signed` from `FastDecoder._rope`."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed
