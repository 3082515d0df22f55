"""The runtime's sampler plus what requests add: logit bias, OpenAI's presence and
frequency penalties, and token probabilities for `logprobs` / `n_probs`.

As in llama.cpp, the bias is added first, then the penalties: repetition (the runtime's),
then frequency and presence over the same last `repeat_last_n` tokens. Reported
probabilities are the model's own (a softmax of the raw logits), as llama-server reports
them unless asked for post-sampling probabilities.
"""

from __future__ import annotations

from collections import Counter

import torch

from ..runtime.sampling import Sampler
from .tasks import GenerationParams, TokenProbs


class ServerSampler(Sampler):
    def __init__(self, params: GenerationParams):
        super().__init__(params.sampling)
        self.presence = params.presence_penalty
        self.frequency = params.frequency_penalty
        self.bias_ids = torch.tensor(list(params.logit_bias), dtype=torch.long)
        self.bias_values = torch.tensor(list(params.logit_bias.values()), dtype=torch.float32)

    def penalized(self, logits: torch.Tensor) -> torch.Tensor:
        if self.bias_ids.numel():
            logits = logits.float().clone()
            logits[self.bias_ids] += self.bias_values
        logits = super().penalized(logits)
        if (self.presence or self.frequency) and self.recent:
            counts = Counter(self.recent)
            ids = torch.tensor(list(counts), dtype=torch.long)
            n = torch.tensor(list(counts.values()), dtype=torch.float32)
            logits[ids] -= n * self.frequency + self.presence
        return logits

    def sample(self, logits: torch.Tensor) -> int:
        if self.p.temp <= 0:
            return super().sample(logits)
        ids, probs = self.candidates(logits)
        if not bool(torch.isfinite(probs).all()):
            # a temperature so small (or a bias so large) that the softmax overflows: the draw is
            # certain to pick the best candidate
            return int(ids[0])
        return int(ids[torch.multinomial(probs, 1, generator=self.generator)])


def token_probs(logits: torch.Tensor, token: int, n: int) -> TokenProbs:
    """The log-probability of `token` and the `n` most likely tokens under the raw logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    values, ids = torch.topk(logp, min(n, logp.numel()))
    top = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    return TokenProbs(token, float(logp[token]), top)
