"""Token sampling as llama.cpp's common sampler does it: repetition penalty, then top-k,
top-p, min-p, temperature, and a draw (greedy when the temperature is 0)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = -1


class Sampler:
    def __init__(self, params: SamplingParams):
        self.p = params
        self.generator = torch.Generator()
        seed = params.seed if params.seed >= 0 else int(torch.seed() % (2**32))
        self.generator.manual_seed(seed)
        self.recent: deque[int] = deque(maxlen=max(0, params.repeat_last_n) or None)

    def accept(self, token: int) -> None:
        if self.p.repeat_last_n != 0:
            self.recent.append(token)

    def penalized(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits after the repetition penalty over the last `repeat_last_n` accepted tokens."""
        logits = logits.float().clone()
        if self.p.repeat_penalty != 1.0 and self.recent:
            ids = torch.tensor(sorted(set(self.recent)), dtype=torch.long)
            picked = logits[ids]
            logits[ids] = torch.where(picked <= 0, picked * self.p.repeat_penalty, picked / self.p.repeat_penalty)
        return logits

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token ids that survive top-k, top-p and min-p, and their probabilities at the temperature."""
        p = self.p
        logits = self.penalized(logits)
        k = p.top_k if 0 < p.top_k < logits.numel() else logits.numel()
        values, ids = torch.topk(logits, k)  # sorted, descending
        if p.top_p < 1.0:
            cum = torch.cumsum(torch.softmax(values, dim=-1), dim=-1)
            # the smallest prefix whose mass reaches top_p (at least one token)
            keep = int(torch.searchsorted(cum, torch.tensor([p.top_p])).item()) + 1
            values, ids = values[:keep], ids[:keep]
        if p.min_p > 0.0:
            probs = torch.softmax(values, dim=-1)
            keep = probs >= p.min_p * probs[0]
            values, ids = values[keep], ids[keep]
        # the max is taken out before dividing, so a tiny temperature gives one-hot, not inf - inf
        return ids, torch.softmax((values - values.max()).double() / p.temp, dim=-1).float()

    def sample(self, logits: torch.Tensor) -> int:
        if self.p.temp <= 0:
            return int(torch.argmax(self.penalized(logits)))
        ids, probs = self.candidates(logits)
        return int(ids[torch.multinomial(probs, 1, generator=self.generator)])
