"""Building blocks shared by the architectures: norms, rope settings, attention, feed-forward,
and `CausalLM`, the token-in / logits-out skeleton every decoder-only model shares.

An architecture file subclasses `CausalLM` and writes its block's equations;
everything numeric goes through `kiln.kernels.dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import ModelError, NumericalError
from ..kernels import dispatch
from ..kernels.weights import QTensor
from .hparams import HParams
from .settings import ComputeSettings


class TensorSource(Protocol):
    """Where a model gets its weights from (the runtime's loader implements it)."""

    def get(self, name: str, required: bool = True) -> QTensor | None: ...


AttendFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.Tensor, torch.Tensor], torch.Tensor]


class LayerCache(Protocol):
    """The KV cache of the sequences in a batch, as the model sees it."""

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, positions: torch.Tensor, fn: AttendFn
    ) -> torch.Tensor:
        """Store k/v [n, n_head_kv, d] of the batch's new tokens (v None: the layer keeps only k),
        then, for each sequence of the batch, return fn(q, k_all, v_all, q_positions, k_positions)
        over that sequence's rows and its whole cache; the results in batch row order."""
        ...


def vector(t: QTensor | None) -> torch.Tensor | None:
    """A 1D weight (norm, bias) as float32."""
    return None if t is None else t.dense()


@dataclass(frozen=True)
class RopeConfig:
    n_rot: int
    freq_base: float
    freq_scale: float = 1.0
    neox: bool = False
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    n_ctx_orig: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    @classmethod
    def from_hparams(cls, hp: HParams, neox: bool, **override) -> RopeConfig:
        fields = dict(
            n_rot=hp.n_rot,
            freq_base=hp.rope_freq_base,
            freq_scale=hp.rope_freq_scale,
            neox=neox,
            ext_factor=hp.yarn_ext_factor,
            attn_factor=hp.rope_attn_factor,
            n_ctx_orig=hp.n_ctx_orig_yarn,
            beta_fast=hp.yarn_beta_fast,
            beta_slow=hp.yarn_beta_slow,
        )
        fields.update(override)
        return cls(**fields)


class RopeTables:
    """cos/sin tables for one forward pass, computed once per distinct rope setting."""

    def __init__(self, positions: torch.Tensor, freq_factors: torch.Tensor | None = None):
        self.positions = positions
        self.freq_factors = freq_factors
        self._tables: dict[RopeConfig, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, cfg: RopeConfig) -> tuple[torch.Tensor, torch.Tensor]:
        tables = self._tables.get(cfg)
        if tables is None:
            tables = dispatch.rope_cos_sin(
                self.positions,
                cfg.n_rot,
                cfg.freq_base,
                cfg.freq_scale,
                self.freq_factors,
                cfg.ext_factor,
                cfg.attn_factor,
                cfg.n_ctx_orig,
                cfg.beta_fast,
                cfg.beta_slow,
            )
            self._tables[cfg] = tables
        return tables


class Attention:
    """Grouped-query self-attention over a KV cache; optional q/k/v biases and per-head q/k norms."""

    def __init__(
        self,
        tensors: TensorSource,
        prefix: str,
        layer: int,
        hp: HParams,
        rope: RopeConfig,
        scale: float | None = None,
        window: int = 0,
        max_kq_bytes: int = 0,
    ):
        self.layer = layer
        self.max_kq_bytes = max_kq_bytes
        self.n_head = hp.n_head[layer]
        self.n_head_kv = hp.n_head_kv[layer]
        self.head_dim = hp.head_dim_k
        self.head_dim_v = hp.head_dim_v
        self.wq = tensors.get(f"{prefix}.attn_q.weight")
        self.wk = tensors.get(f"{prefix}.attn_k.weight")
        self.wv = tensors.get(f"{prefix}.attn_v.weight")
        self.wo = tensors.get(f"{prefix}.attn_output.weight")
        self.bq = vector(tensors.get(f"{prefix}.attn_q.bias", required=False))
        self.bk = vector(tensors.get(f"{prefix}.attn_k.bias", required=False))
        self.bv = vector(tensors.get(f"{prefix}.attn_v.bias", required=False))
        self.bo = vector(tensors.get(f"{prefix}.attn_output.bias", required=False))
        self.q_norm = vector(tensors.get(f"{prefix}.attn_q_norm.weight", required=False))
        self.k_norm = vector(tensors.get(f"{prefix}.attn_k_norm.weight", required=False))
        self.eps = hp.norm_eps
        self.rope = rope
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.window = window
        self.softcap = hp.attn_logit_softcap

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache: LayerCache, rope: RopeTables) -> torch.Tensor:
        n = x.shape[0]
        q = dispatch.linear(x, self.wq, self.bq).view(n, self.n_head, self.head_dim)
        k = dispatch.linear(x, self.wk, self.bk).view(n, self.n_head_kv, self.head_dim)
        v = dispatch.linear(x, self.wv, self.bv).view(n, self.n_head_kv, self.head_dim_v)
        if self.q_norm is not None:
            q = dispatch.rms_norm(q, self.q_norm, self.eps)
        if self.k_norm is not None:
            k = dispatch.rms_norm(k, self.k_norm, self.eps)
        cos, sin = rope.get(self.rope)
        q = dispatch.rope(q, cos, sin, self.rope.neox)
        k = dispatch.rope(k, cos, sin, self.rope.neox)
        out = cache.attend(self.layer, q, k, v, positions, self._attend)
        return dispatch.linear(out.reshape(n, self.n_head * self.head_dim_v), self.wo, self.bo)


    def _attend(self, q, k_all, v_all, q_pos, k_pos) -> torch.Tensor:
        return dispatch.attention(q, k_all, v_all, q_pos, k_pos, self.scale, self.window, self.softcap, self.max_kq_bytes)


class GatedFFN:
    """down(act(gate(x)) * up(x))."""

    def __init__(self, tensors: TensorSource, prefix: str, act: Callable = dispatch.silu_gate, suffix: str = ""):
        self.gate = tensors.get(f"{prefix}.ffn_gate{suffix}.weight")
        self.up = tensors.get(f"{prefix}.ffn_up{suffix}.weight")
        self.down = tensors.get(f"{prefix}.ffn_down{suffix}.weight")
        self.act = act

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.linear(self.act(dispatch.linear(x, self.gate), dispatch.linear(x, self.up)), self.down)


class PreNormBlock:
    """h = x + attn(RMSNorm(x)); out = h + ffn(RMSNorm(h)): subclasses set attn_norm, attn,
    ffn_norm, ffn and eps."""

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache: LayerCache, rope: RopeTables) -> torch.Tensor:
        h = x + self.attn(dispatch.rms_norm(x, self.attn_norm, self.eps), positions, cache, rope)
        return h + self.ffn(dispatch.rms_norm(h, self.ffn_norm, self.eps))

    def generation_step(self):
        """This block prepared for `dispatch.blocks_step` (all blocks in one call per generated
        token), or None when it is not exactly the plain pre-norm block with attention and a
        SiLU FFN, or its weights or shapes have no kernel there."""
        attn, ffn = getattr(self, "attn", None), getattr(self, "ffn", None)
        if (
            type(self).__call__ is not PreNormBlock.__call__
            or type(attn) is not Attention
            or type(ffn) is not GatedFFN
            or ffn.act is not dispatch.silu_gate
            or attn.eps != self.eps
        ):
            return None
        return dispatch.block_step_plan(
            self.attn_norm, self.ffn_norm, self.eps,
            [attn.wq, attn.wk, attn.wv, attn.wo, ffn.gate, ffn.up, ffn.down],
            [attn.bq, attn.bk, attn.bv, attn.bo], attn.q_norm, attn.k_norm,
            attn.n_head, attn.n_head_kv, attn.head_dim, attn.head_dim_v,
            attn.rope.neox, attn.scale, attn.window, attn.softcap,
        )  # fmt: skip


class CausalLM:
    """Token embedding, a stack of blocks, final norm and output projection.

    Subclasses set `make_block(tensors, layer) -> callable(x, positions, cache, rope)`
    and may override `embed`.
    """

    def __init__(self, hp: HParams, tensors: TensorSource, settings: ComputeSettings | None = None):
        self.hp = hp
        self.settings = settings or ComputeSettings()
        self.tok_embd = tensors.get("token_embd.weight")
        self.output_norm = vector(tensors.get("output_norm.weight"))
        self.output = tensors.get("output.weight", required=False) or self.tok_embd
        self.freq_factors = vector(tensors.get("rope_freqs.weight", required=False))
        self._steps = None  # the blocks prepared for dispatch.blocks_step on the first single token (False: cannot)
        self.prepare(tensors)
        # trailing multi-token-prediction blocks (nextn) are loaded by nobody and never run
        self.blocks = [self.make_block(tensors, il) for il in range(hp.n_layer - hp.nextn_predict_layers)]

    def prepare(self, tensors: TensorSource) -> None:
        """Work to do once before the blocks are built (derived tensors); none by default."""

    def _step_rows(self, x: torch.Tensor, cache: LayerCache) -> list | None:
        """For one new token whose every block has a generation step: per layer, the cache
        rows that step writes and reads (k, v, slot); else None (the per-operation path)."""
        new_rows = getattr(cache, "new_token_rows", None)
        if x.shape[0] != 1 or new_rows is None or not dispatch.block_steps_enabled(x):
            return None
        if self._steps is None:
            steps = [getattr(block, "generation_step", lambda: None)() for block in self.blocks]
            self._steps = dispatch.model_steps(steps) if steps and all(s is not None for s in steps) else False
        if not self._steps:
            return None
        rows = []
        for il, step in enumerate(self._steps.blocks):
            r = new_rows(il, (step.n_kv, step.hd), (step.n_kv, step.hdv))
            if r is None or not dispatch.block_step_cache_ok(r, step):
                return None
            rows.append(r)
        return rows

    def kv_row_sizes(self, layer: int) -> tuple[int, int]:
        """Values per token that layer `layer` keeps in the K and V cache."""
        hp = self.hp
        return hp.n_head_kv[layer] * hp.head_dim_k, hp.n_head_kv[layer] * hp.head_dim_v

    def make_block(self, tensors: TensorSource, layer: int):
        raise NotImplementedError

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return dispatch.embedding_rows(self.tok_embd, tokens)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache,
        output_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [n_out, n_vocab] for `output_rows` of the batch (all rows when None)."""
        if int(tokens.max()) >= self.hp.n_vocab or int(tokens.min()) < 0:
            bad = int(tokens.max()) if int(tokens.max()) >= self.hp.n_vocab else int(tokens.min())
            raise ModelError(f"token id {bad} is outside the vocabulary (0..{self.hp.n_vocab - 1})")
        x = self.embed(tokens)
        rope = RopeTables(positions, self.freq_factors)
        # one sum per layer, checked once at the end: a NaN or Inf anywhere in a layer's output
        # makes its sum non-finite, and the first such layer is the one to report
        sums = torch.empty(len(self.blocks), dtype=torch.float32)
        rows = self._step_rows(x, cache)
        if rows is not None:
            sums = dispatch.blocks_step(self._steps, x, [rope.get(block.attn.rope) for block in self.blocks], rows)
        else:
            for il, block in enumerate(self.blocks):
                x = block(x, positions, cache, rope)
                sums[il] = x.sum()
        if len(self.blocks) and not bool(torch.isfinite(sums).all()):
            il = int((~torch.isfinite(sums)).nonzero()[0])
            raise NumericalError(
                f"NaN or Inf in the output of layer {il} (blk.{il}); the weights or the input are out of "
                "range: check the file, or try a f32 KV cache (-ctk f32 -ctv f32)"
            )
        if output_rows is not None:
            if output_rows.numel() == 0:  # only the KV cache was wanted
                return x.new_empty((0, self.hp.n_vocab))
            x = x[output_rows]
        x = dispatch.rms_norm(x, self.output_norm, self.hp.norm_eps)
        logits = dispatch.linear(x, self.output)
        if self.hp.final_logit_softcap:
            cap = self.hp.final_logit_softcap
            logits = cap * torch.tanh(logits / cap)
        if not torch.isfinite(logits).all():
            raise NumericalError(
                "NaN or Inf in the logits (the output layer, after finite hidden states): "
                "the output weights are out of range; check the file"
            )
        return logits
