"""DeepSeek's multi-head latent attention (MLA), with ik_llama.cpp's latent KV cache.

Per token the model projects x to a compressed latent c_kv (kv_lora_rank values) and one
shared rope key k_pe (the rope dims). Per head, keys and values are decompressed from
c_kv through attn_kv_b:  k_nope_h = W_kb_h c_kv,  v_h = W_vb_h c_kv.

- `-mla 0` decompresses at once and caches per-head K (nope + rope) and V, as any model.
- `-mla 1|2|3` cache only [k_pe, c_kv] per token (kv_lora_rank + rope values, one row).
  Attention is computed in the absorbed form: q_nope is taken into latent space
  (q_nope W_kb_h, through attn_k_b), scores are q . [k_pe, c_kv] against the cache, and
  the output leaves latent space through attn_v_b. With `-mla 2` or `3`, prompt batches
  of 128+ tokens instead decompress the cached latents through attn_kv_b and attend per
  head (ik_llama.cpp's -mla 3 with -fa), which is cheaper for long batches.

Files carry these weights in three conventions; `prepare_mla_tensors` derives what is
missing at load, logging one line per kind as ik_llama.cpp does:
old mainline files have only attn_kv_b (attn_k_b and attn_v_b are derived; attn_k_b is
stored as Q8_0 when attn_kv_b is quantized, as in ik_llama.cpp), ik files have all
three, new mainline files have only attn_k_b/attn_v_b (attn_kv_b is derived when a mode
needs it) and describe the latent cache in their key/value lengths.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..errors import ModelError
from ..kernels import dispatch
from ..kernels.weights import QTensor
from ..quants import interleaved, quant_type
from .hparams import HParams
from .layers import LayerCache, RopeConfig, RopeTables, TensorSource, vector
from .settings import MLA_DECOMPRESS_MIN_TOKENS, ComputeSettings

log = logging.getLogger("kiln.model")


@dataclass(frozen=True)
class MLAShape:
    n_head: int
    qk_nope: int
    qk_rope: int
    v_head: int
    kv_lora: int
    q_lora: int

    @classmethod
    def from_hparams(cls, hp: HParams) -> MLAShape:
        if hp.kv_lora_rank <= 0:
            raise ModelError(f"{hp.arch}: metadata key {hp.arch}.attention.kv_lora_rank is missing; the file is incomplete")
        key = int(hp.extra.get("attention.key_length_mla", hp.head_dim_k))
        value = int(hp.extra.get("attention.value_length_mla", hp.head_dim_v))
        if key <= hp.n_rot:
            raise ModelError(f"{hp.arch}: key length {key} is not larger than the rope dimension {hp.n_rot}")
        return cls(hp.n_head[0], key - hp.n_rot, hp.n_rot, value, hp.kv_lora_rank, hp.q_lora_rank)

    @property
    def latent(self) -> int:
        """Values per token and layer in the latent cache."""
        return self.kv_lora + self.qk_rope


def prepare_mla_tensors(tensors: TensorSource, hp: HParams, mla: int) -> dict[int, dict[str, QTensor]]:
    """Per layer, attn_k_b / attn_v_b / attn_kv_b, derived where the file lacks them."""
    shape = MLAShape.from_hparams(hp)
    out: dict[int, dict[str, QTensor]] = {}
    derived_kb, derived_kvb = 0, 0
    for il in range(hp.n_layer - hp.nextn_predict_layers):
        p = f"blk.{il}"
        kv_b = tensors.get(f"{p}.attn_kv_b.weight", required=False)
        k_b = tensors.get(f"{p}.attn_k_b.weight", required=False)
        v_b = tensors.get(f"{p}.attn_v_b.weight", required=False)
        if kv_b is None and (k_b is None or v_b is None):
            raise ModelError(
                f"tensor {p}.attn_kv_b.weight (or {p}.attn_k_b.weight with {p}.attn_v_b.weight) is missing; "
                "the file is incomplete, convert it again"
            )
        if k_b is None or v_b is None:
            k_b, v_b = _split_kv_b(kv_b, shape, p)
            derived_kb += 1
        if kv_b is None and mla != 1:
            kv_b = _join_kv_b(k_b, v_b, shape, p)
            derived_kvb += 1
        out[il] = {"k_b": k_b, "v_b": v_b, "kv_b": kv_b}
    if derived_kb:
        log.info("============ prepare_mla: need to compute %d wk_b/wv_b tensors", derived_kb)
    if derived_kvb:
        log.info("============ prepare_mla: need to compute %d wkv_b tensors", derived_kvb)
    return out


def _split_kv_b(kv_b: QTensor, s: MLAShape, prefix: str) -> tuple[QTensor, QTensor]:
    w = kv_b.dense().view(s.n_head, s.qk_nope + s.v_head, s.kv_lora)
    k_b = w[:, : s.qk_nope, :].transpose(1, 2).reshape(s.n_head * s.kv_lora, s.qk_nope)
    v_b = w[:, s.qk_nope :, :].reshape(s.n_head * s.v_head, s.kv_lora)
    src = quant_type(kv_b.type_id).name
    if src in ("F32", "F16", "BF16"):
        k_type = src
    else:  # ik_llama.cpp stores the derived wk_b as Q8_0 when wkv_b is quantized
        k_type = "Q8_0" if s.qk_nope % 32 == 0 else "F32"
    name = f"{prefix}.attn_v_b.weight"
    return QTensor.from_float(f"{prefix}.attn_k_b.weight", k_b, k_type), _value_rows(kv_b, s, name) or QTensor.from_float(name, v_b)


def _value_rows(kv_b: QTensor, s: MLAShape, name: str) -> QTensor | None:
    """attn_v_b as the value rows of a quantized attn_kv_b, their bytes unchanged (no float
    copy; the CPU kernels read them); None for float and row-interleaved types."""
    t = quant_type(kv_b.type_id)
    if t.name in ("F32", "F16", "BF16") or t.name in interleaved.LAYOUTS or len(kv_b.shape) != 2:
        return None
    rows = kv_b.raw.reshape(s.n_head, s.qk_nope + s.v_head, -1)[:, s.qk_nope :, :]
    return QTensor(name, rows.copy().reshape(-1), kv_b.type_id, (s.kv_lora, s.n_head * s.v_head))


def _join_kv_b(k_b: QTensor, v_b: QTensor, s: MLAShape, prefix: str) -> QTensor:
    kb = k_b.dense().reshape(s.n_head, s.kv_lora, s.qk_nope).transpose(1, 2)
    vb = v_b.dense().reshape(s.n_head, s.v_head, s.kv_lora)
    kv_b = torch.cat([kb, vb], dim=1).reshape(s.n_head * (s.qk_nope + s.v_head), s.kv_lora)
    return QTensor.from_float(f"{prefix}.attn_kv_b.weight", kv_b)


def yarn_kq_scale(hp: HParams, head_dim_k: int) -> tuple[float, float]:
    """DeepSeek's softmax scale with YaRN (mscale^2 / sqrt(d)) and the rope attn_factor that
    undoes ggml's own YaRN magnitude correction (ik_llama.cpp's build_deepseek2)."""
    freq_scale = hp.rope_freq_scale
    mscale = hp.rope_attn_factor * (1.0 + hp.rope_yarn_log_mul * math.log(1.0 / freq_scale))
    kq_scale = mscale * mscale / math.sqrt(head_dim_k)
    attn_factor = 1.0 / (1.0 + 0.1 * math.log(1.0 / freq_scale))
    return kq_scale, attn_factor


class MLAAttention:
    def __init__(
        self,
        tensors: TensorSource,
        layer: int,
        hp: HParams,
        derived: dict[str, QTensor],
        settings: ComputeSettings,
    ):
        p = f"blk.{layer}"
        self.layer = layer
        self.s = s = MLAShape.from_hparams(hp)
        self.eps = hp.norm_eps
        if s.q_lora:
            self.wq_a = tensors.get(f"{p}.attn_q_a.weight")
            self.q_a_norm = vector(tensors.get(f"{p}.attn_q_a_norm.weight"))
            self.wq_b = tensors.get(f"{p}.attn_q_b.weight")
        else:
            self.wq = tensors.get(f"{p}.attn_q.weight")
        self.wkv_a = tensors.get(f"{p}.attn_kv_a_mqa.weight")
        self.kv_a_norm = vector(tensors.get(f"{p}.attn_kv_a_norm.weight"))
        self.wo = tensors.get(f"{p}.attn_output.weight")
        self.kv_b = derived["kv_b"]
        self.k_b_weight = derived["k_b"]  # n_head matrices of kv_lora rows of qk_nope values
        self.v_b_weight = derived["v_b"]  # n_head matrices of v_head rows of kv_lora values
        self.kq_scale, attn_factor = yarn_kq_scale(hp, s.qk_nope + s.qk_rope)
        self.rope = RopeConfig.from_hparams(hp, neox=False, attn_factor=attn_factor)
        self.settings = settings

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache: LayerCache, rope: RopeTables) -> torch.Tensor:
        s, n = self.s, x.shape[0]
        if s.q_lora:
            q = dispatch.linear(dispatch.rms_norm(dispatch.linear(x, self.wq_a), self.q_a_norm, self.eps), self.wq_b)
        else:
            q = dispatch.linear(x, self.wq)
        q = q.view(n, s.n_head, s.qk_nope + s.qk_rope)
        q_nope, q_pe = q[..., : s.qk_nope], q[..., s.qk_nope :]
        kv = dispatch.linear(x, self.wkv_a)
        c_kv = dispatch.rms_norm(kv[:, : s.kv_lora], self.kv_a_norm, self.eps)
        k_pe = kv[:, s.kv_lora :].reshape(n, 1, s.qk_rope)
        cos, sin = rope.get(self.rope)
        q_pe = dispatch.rope(q_pe, cos, sin, False)
        k_pe = dispatch.rope(k_pe, cos, sin, False)
        if self.settings.mla == 0:
            k_nope, v = self._decompress(c_kv)
            k = torch.cat([k_nope, k_pe.expand(n, s.n_head, s.qk_rope)], dim=-1)
            out = cache.attend(self.layer, torch.cat([q_nope, q_pe], dim=-1), k, v, positions, self._attend)
        else:
            latent = torch.cat([k_pe, c_kv.view(n, 1, s.kv_lora)], dim=-1)
            q_parts = torch.cat([q_nope, q_pe], dim=-1)
            out = cache.attend(self.layer, q_parts, latent, None, positions, self._attend_latent)
        return dispatch.linear(out.reshape(n, s.n_head * s.v_head), self.wo)

    def _attend(self, q, k_all, v_all, q_pos, k_pos) -> torch.Tensor:
        return dispatch.attention(q, k_all, v_all, q_pos, k_pos, self.kq_scale, max_kq_bytes=self.settings.attn_max_bytes)

    def _attend_latent(self, q, lat_all, _, q_pos, k_pos) -> torch.Tensor:
        """Attention over one sequence's latent cache: decompressed for long batches (-mla 2/3),
        else in the latent space through attn_k_b / attn_v_b."""
        s, amb = self.s, self.settings.attn_max_bytes
        q_nope, q_pe = q[..., : s.qk_nope], q[..., s.qk_nope :]
        if self.settings.mla >= 2 and q.shape[0] >= MLA_DECOMPRESS_MIN_TOKENS:
            k_nope, v = self._decompress(lat_all[:, 0, s.qk_rope :].float())
            k = torch.cat([k_nope, lat_all[:, :, : s.qk_rope].float().expand(-1, s.n_head, -1)], dim=-1)
            return dispatch.attention(q, k, v, q_pos, k_pos, self.kq_scale, max_kq_bytes=amb)
        q_cat = torch.cat([q_pe, dispatch.per_head_product(q_nope, self.k_b_weight, s.n_head)], dim=-1)
        out_lat = dispatch.attention(q_cat, lat_all, lat_all[:, :, s.qk_rope :], q_pos, k_pos, self.kq_scale, max_kq_bytes=amb)
        return dispatch.per_head_product(out_lat, self.v_b_weight, s.n_head)

    @property
    def k_b(self) -> torch.Tensor:
        """attn_k_b per head as float32 [n_head, kv_lora, qk_nope] (made on first use, kept)."""
        return self.k_b_weight.dense().reshape(self.s.n_head, self.s.kv_lora, self.s.qk_nope)

    @property
    def v_b(self) -> torch.Tensor:
        """attn_v_b per head as float32 [n_head, v_head, kv_lora]."""
        return self.v_b_weight.dense().reshape(self.s.n_head, self.s.v_head, self.s.kv_lora)

    def _decompress(self, c_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.s
        if self.kv_b is None:
            raise ModelError(f"blk.{self.layer}.attn_kv_b.weight is needed for this -mla mode but was not prepared")
        kv = dispatch.linear(c_kv, self.kv_b).view(-1, s.n_head, s.qk_nope + s.v_head)
        return kv[..., : s.qk_nope], kv[..., s.qk_nope :]
