"""The arithmetic of `kiln perplexity`: token log-likelihoods, the perplexity estimate
with its uncertainty, ik_llama.cpp's 16-bit packing of log-probabilities (the
`--kl-divergence-base` file) and the KL-divergence statistics against such a base.

All of it follows llama-perplexity's formulas (examples/perplexity/perplexity.cpp):

- nll of token t = max(l) + log(sum exp(l - max(l))) - l[t]; PPL = exp(mean nll), its
  uncertainty PPL * sqrt((mean nll^2 - mean nll^2) / (count - 1)).
- A packed row is [scale f32, min_log_prob f32] (4 uint16) then one uint16 per vocabulary
  entry, padded to an even count: q = round((l - lmin) / scale) for l > lmin else 0, where
  lmin = max(min(l), max(l) - 24) and scale = (max(l) - lmin) / 65535; the log-probability
  is scale * q + min_log_prob.
- KLD per token = sum over base entries with log p > -16 of p_base (log p_base - log p_q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

LOG_PROB_RANGE = 24.0  # packed rows keep log-probabilities within this range of the top one
KLD_FLOOR = -16.0  # base log-probabilities below this are left out of the KL sum


def packed_row_length(n_vocab: int) -> int:
    """uint16 values per packed row: 4 for the two float32 header values, the vocabulary
    rounded up to an even count."""
    return 2 * ((n_vocab + 1) // 2) + 4


def _log_sum_exp(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the max logit and log(sum exp(l - max)) (the sum in float64, as ik does)."""
    lmax = logits.max(dim=-1).values
    lse = torch.exp(logits - lmax[:, None]).to(torch.float64).sum(dim=-1).log()
    return lmax, lse


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits, float64 [n]."""
    logits = logits.float()
    lmax, lse = _log_sum_exp(logits)
    picked = logits.gather(1, targets.long().view(-1, 1)).squeeze(1)
    return (lmax.double() + lse - picked.double()).numpy()


def pack_log_probs(logits: torch.Tensor) -> np.ndarray:
    """Rows of logits as ik_llama.cpp's packed uint16 log-probabilities [n, packed_row_length]."""
    logits = logits.float()
    n, n_vocab = logits.shape
    lmax, lse = _log_sum_exp(logits)
    lmin = torch.maximum(logits.min(dim=-1).values, lmax - LOG_PROB_RANGE)
    log_sum_exp = lse.float()
    min_log_prob = lmin - lmax - log_sum_exp
    scale = (lmax - lmin) / 65535.0
    out = np.zeros((n, packed_row_length(n_vocab)), dtype=np.uint16)
    header = torch.stack([scale, min_log_prob], dim=1).numpy().astype(np.float32)
    out[:, :4] = header.view(np.uint16)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    inv = torch.where(scale > 0, 1.0 / safe, torch.zeros_like(scale))
    q = torch.round(inv[:, None] * (logits - lmin[:, None]))  # round half to even, as ggml's nearest_int
    q = torch.where(logits > lmin[:, None], q, torch.zeros_like(q)).clamp_(0, 65535)
    out[:, 4 : 4 + n_vocab] = q.to(torch.int32).numpy().astype(np.uint16)
    return out


def unpack_log_probs(packed: np.ndarray, n_vocab: int) -> torch.Tensor:
    """Packed rows back to log-probabilities, float32 [n, n_vocab]."""
    header = np.ascontiguousarray(packed[:, :4]).view(np.float32)
    scale = torch.from_numpy(header[:, 0].copy())
    min_log_prob = torch.from_numpy(header[:, 1].copy())
    q = torch.from_numpy(packed[:, 4 : 4 + n_vocab].astype(np.float32))
    return scale[:, None] * q + min_log_prob[:, None]


@dataclass
class PerplexityAccumulator:
    """Running sums of nll and nll^2 over the scored tokens."""

    nll: float = 0.0
    nll2: float = 0.0
    count: int = 0

    def add(self, nll: np.ndarray) -> None:
        self.nll += float(nll.sum())
        self.nll2 += float((nll * nll).sum())
        self.count += int(nll.size)

    def ppl(self) -> float:
        return math.exp(self.nll / self.count)

    def estimate(self) -> tuple[float, float]:
        """(PPL, its uncertainty) as llama-perplexity's final estimate; uncertainty NaN when
        the variance comes out non-positive."""
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        ppl = math.exp(mean)
        if var <= 0 or self.count < 2:
            return ppl, float("nan")
        return ppl, math.sqrt(var / (self.count - 1)) * ppl


def mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    if count < 1:
        return 0.0, 0.0
    mean = total / count
    var = total2 / count - mean * mean
    return mean, (math.sqrt(var / (count - 1)) if var > 0 and count > 10 else 0.0)


def covariance(total_a: float, total_b: float, total_ab: float, count: int) -> float:
    if count < 10:
        return 0.0
    return (total_ab / count - (total_a / count) * (total_b / count)) / (count - 1)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """ik_llama.cpp's interpolated percentile of sorted values."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = fraction * (sorted_values.size - 1)
    i = int(p)
    p -= i
    return float((1 - p) * sorted_values[i] + p * sorted_values[min(i + 1, sorted_values.size - 1)])


def median(sorted_values: np.ndarray) -> float:
    n = sorted_values.size
    return float(0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]) if n % 2 == 0 else sorted_values[n // 2])


@dataclass
class KLDAccumulator:
    """Sums for the KL-divergence report of a model against a base's packed log-probs."""

    n_vocab: int
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    max_p_diff: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list[np.ndarray] = field(default_factory=list)
    p_diff_values: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: torch.Tensor, base_packed: np.ndarray, targets: torch.Tensor) -> None:
        logits = logits.float()
        lmax, lse = _log_sum_exp(logits)
        log_q = logits.double() - (lmax.double() + lse)[:, None]
        log_base = unpack_log_probs(base_packed, self.n_vocab).double()
        t = targets.long().view(-1, 1)
        nll = -log_q.gather(1, t).squeeze(1)
        nll_base = -log_base.gather(1, t).squeeze(1)
        keep = log_base > KLD_FLOOR
        terms = torch.where(keep, torch.exp(log_base) * (log_base - log_q), torch.zeros_like(log_base))
        kld = terms.sum(dim=1)
        # argmax picks the first maximum, as the C loops do
        same_top = logits.argmax(dim=1) == torch.from_numpy(base_packed[:, 4 : 4 + self.n_vocab].astype(np.int32)).argmax(dim=1)
        p_diff = torch.exp(-nll) - torch.exp(-nll_base)
        self.sum_nll += float(nll.sum())
        self.sum_nll2 += float((nll * nll).sum())
        self.sum_nll_base += float(nll_base.sum())
        self.sum_nll_base2 += float((nll_base * nll_base).sum())
        self.sum_nll_nll_base += float((nll * nll_base).sum())
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        self.sum_p_diff += float(p_diff.sum())
        self.sum_p_diff2 += float((p_diff**2).sum())
        self.sum_p_diff4 += float((p_diff**4).sum())
        self.max_p_diff = max(self.max_p_diff, float(p_diff.abs().max()))
        self.n_same_top += int(same_top.sum())
        self.count += int(nll.numel())
        self.kld_values.append(kld.numpy())
        self.p_diff_values.append(p_diff.numpy())

    # ----- derived figures, named as ik_llama.cpp prints them -----

    def log_ppl(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)

    def log_ppl_base(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)

    def log_ppl_cov(self) -> float:
        return covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)

    def log_ppl_ratio(self) -> tuple[float, float]:
        (a, da), (b, db) = self.log_ppl(), self.log_ppl_base()
        var = da * da + db * db - 2.0 * self.log_ppl_cov()
        return a - b, math.sqrt(max(var, 0.0))

    def kld(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count)

    def p_diff_rms(self) -> tuple[float, float]:
        mse, dmse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        return rms, (0.5 / rms * dmse if rms > 0 else 0.0)

    def same_top(self) -> tuple[float, float]:
        p = self.n_same_top / self.count
        return p, (math.sqrt(p * (1 - p) / (self.count - 1)) if self.count > 1 else 0.0)

    def sorted_kld(self) -> np.ndarray:
        return np.sort(np.concatenate(self.kld_values)) if self.kld_values else np.zeros(0)

    def sorted_p_diff(self) -> np.ndarray:
        return np.sort(np.concatenate(self.p_diff_values)) if self.p_diff_values else np.zeros(0)
