"""Preference accuracy and reward margins of a DPO adapter against its base, from log-probabilities.

The implicit reward of an answer is beta * (log p_adapter(answer | prompt) - log p_base(answer | prompt))
(DPO's reward, as TRL's `rewards/accuracies` and `rewards/margins` report it). For the base model itself
that reward is 0 for both answers, so it ranks nothing: the base is scored by its own log-likelihood
instead (chosen ranked first when log p_base(chosen) > log p_base(rejected)), and the adapter is scored
both ways, so `logp_accuracy` against `base_accuracy` compares like with like. Ties count as misses.
Pure arithmetic on tensors (dpo.py computes the log-probs); imports no dagster.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class PreferenceEvaluation:
    """Scores of one split's pairs; log-probs are sums over answer tokens, in nats."""

    pairs: int
    beta: float
    accuracy: float  # share of pairs whose adapter reward ranks chosen strictly above rejected
    reward_margin: float  # mean of reward(chosen) - reward(rejected)
    chosen_reward: float  # mean reward of the chosen answers
    rejected_reward: float  # mean reward of the rejected answers
    logp_accuracy: float  # share where the adapter's own log-likelihood ranks chosen above rejected
    base_accuracy: float  # the same share for the base model (adapter disabled): the baseline of logp_accuracy
    base_logp_margin: float  # mean of log p_base(chosen) - log p_base(rejected)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PreferenceEvaluation":
        return cls(**json.loads(text))

    def summary(self) -> str:
        return (f"{self.pairs} pairs: reward accuracy {self.accuracy:.3f}, reward margin {self.reward_margin:.4f}; "
                f"log-likelihood accuracy {self.logp_accuracy:.3f} (base {self.base_accuracy:.3f})")


def preference_evaluation(logps: dict[str, torch.Tensor], beta: float) -> PreferenceEvaluation:
    """Scores from per-pair log-probs {"chosen", "rejected"} (adapter) and {"ref_chosen", "ref_rejected"} (base)."""
    chosen, rejected = logps["chosen"].double(), logps["rejected"].double()
    ref_chosen, ref_rejected = logps["ref_chosen"].double(), logps["ref_rejected"].double()
    n = len(chosen)
    if n == 0:
        nan = float("nan")
        return PreferenceEvaluation(0, beta, nan, nan, nan, nan, nan, nan, nan)
    chosen_rewards, rejected_rewards = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return PreferenceEvaluation(
        pairs=n, beta=beta,
        accuracy=float((chosen_rewards > rejected_rewards).double().mean()),
        reward_margin=float((chosen_rewards - rejected_rewards).mean()),
        chosen_reward=float(chosen_rewards.mean()), rejected_reward=float(rejected_rewards.mean()),
        logp_accuracy=float((chosen > rejected).double().mean()),
        base_accuracy=float((ref_chosen > ref_rejected).double().mean()),
        base_logp_margin=float((ref_chosen - ref_rejected).mean()))
