"""Preference alignment: DPO (sigmoid / IPO losses), SimPO, and a pairwise reward model (ORM).

For a batch of (chosen, rejected) sequences with labels (-100 on prompt and padding), each sequence's
log-probability is the sum of log p(label tokens). With the policy pi and a frozen reference model (the starting
weights), and r = log pi(y|x) - log ref(y|x):
  dpo (sigmoid):  -log sigmoid(beta * (r_chosen - r_rejected))            (Rafailov et al. 2023)
  ipo:            (r_chosen - r_rejected - 1 / (2 beta))^2                   (Azar et al. 2023)
  simpo:          -log sigmoid(beta * (avg log pi(chosen) - avg log pi(rejected)) - gamma)  (Meng et al. 2024;
                  per-token averages, no reference model)
`label_smoothing` e mixes in the flipped preference for dpo: (1-e) * loss(m) + e * loss(-m).
The reward model puts a scalar head (`score`) on the decoder's last hidden state of each sequence's last real
token and trains -log sigmoid(reward_chosen - reward_rejected); accuracy = share of pairs ranked right.
"""
from typing import Tuple

import mindspore as ms
from mindspore import nn, ops

from ..models.base import token_logprobs
from ..modules.layers import Linear

IGNORE = -100
LOSS_TYPES = ("dpo", "sigmoid", "ipo", "simpo")


def _log_sigmoid(x):
    """log(sigmoid(x)) without overflow for large |x| (CPU has no log_sigmoid kernel)."""
    return ops.minimum(x, 0.0) - ops.log1p(ops.exp(-ops.abs(x)))


def sequence_logprobs(network, ids, labels) -> Tuple[ms.Tensor, ms.Tensor]:
    """(sum of log p over label tokens, number of label tokens) per row, for ids/labels (B, S+1)."""
    logp, mask = token_logprobs(network.logits(ids[:, :-1]), labels[:, 1:], IGNORE)
    return logp.sum(-1), mask.sum(-1)


def preference_loss(loss_type: str, beta: float, policy_chosen, policy_rejected, ref_chosen=None,
                    ref_rejected=None, gamma: float = 0.5, label_smoothing: float = 0.0):
    """Per-pair losses from sequence log-probs (sums; for simpo pass per-token averages)."""
    if loss_type == "simpo":
        margin = beta * (policy_chosen - policy_rejected) - gamma
        return -_log_sigmoid(margin)
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "ipo":
        return (logits - 1.0 / (2.0 * beta)) ** 2
    return -_log_sigmoid(beta * logits) * (1.0 - label_smoothing) - _log_sigmoid(-beta * logits) * label_smoothing


class PreferenceLoss(nn.Cell):
    """Wraps the policy (and a frozen reference) into the loss network the train step differentiates."""

    def __init__(self, policy, reference, loss_type: str = "dpo", beta: float = 0.1, gamma: float = 0.5,
                 label_smoothing: float = 0.0):
        super().__init__(auto_prefix=False)  # parameter names stay the models' own
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"preference.loss_type '{loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if beta <= 0 or not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"preference: beta must be > 0 and label_smoothing in [0, 0.5), got {beta}, "
                             f"{label_smoothing}")
        if loss_type != "simpo" and reference is None:
            raise ValueError(f"preference.loss_type {loss_type} needs a reference model")
        self.policy, self.reference = policy, reference
        self.loss_type, self.beta, self.gamma, self.smoothing = loss_type, float(beta), float(gamma), \
            float(label_smoothing)
        self.config = policy.config

    def construct(self, chosen_ids, chosen_labels, rejected_ids, rejected_labels):
        batch = chosen_ids.shape[0]
        ids = ops.concat((chosen_ids, rejected_ids), 0)
        labels = ops.concat((chosen_labels, rejected_labels), 0)
        logp, count = sequence_logprobs(self.policy, ids, labels)
        if self.loss_type == "simpo":
            avg = logp / ops.maximum(count, 1.0)
            return preference_loss("simpo", self.beta, avg[:batch], avg[batch:], gamma=self.gamma).mean()
        ref, _ = sequence_logprobs(self.reference, ids, labels)
        ref = ops.stop_gradient(ref)
        return preference_loss(self.loss_type, self.beta, logp[:batch], logp[batch:], ref[:batch], ref[batch:],
                               label_smoothing=self.smoothing).mean()


def frozen_copy(network, build):
    """A second model from `build()` holding a frozen copy of `network`'s weights, its names prefixed 'reference.'"""
    reference = build()
    source = {p.name: p for p in network.get_parameters()}
    for p in reference.get_parameters():
        p.set_data(ms.Tensor(source[p.name].asnumpy()))
        p.requires_grad = False
        p.name = "reference." + p.name
    reference.set_train(False)
    return reference


class RewardModel(nn.Cell):
    """A causal LM's decoder with a scalar `score` head on each sequence's last real token (ORM)."""

    def __init__(self, lm):
        super().__init__(auto_prefix=False)
        self.lm = lm
        self.config = lm.config
        hidden = lm.config.hidden_size
        self.score = Linear(hidden, 1, init_std=lm.config.initializer_range)
        self.score.weight.name = "score.weight"

    def rewards(self, ids, labels):
        h = self.lm.model(ids[:, :-1])  # (B, S, C)
        # last position whose next token is a label (the sequence's final real token)
        valid = (labels[:, 1:] != IGNORE).astype(ms.int32)
        positions = ops.arange(valid.shape[1]).astype(ms.int32).expand_dims(0)
        last = ops.amax(valid * positions, -1)  # (B,)
        picked = ops.gather_elements(h, 1, last.reshape(-1, 1, 1).broadcast_to((h.shape[0], 1, h.shape[2])))
        return self.score(picked).reshape(-1).astype(ms.float32)

    def construct(self, chosen_ids, chosen_labels, rejected_ids, rejected_labels):
        chosen = self.rewards(chosen_ids, chosen_labels)
        rejected = self.rewards(rejected_ids, rejected_labels)
        return (-_log_sigmoid(chosen - rejected)).mean()
