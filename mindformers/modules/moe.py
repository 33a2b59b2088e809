"""Mixture-of-experts feed-forward: a top-k softmax router over SwiGLU experts, plus the load-balancing loss.

Every expert runs on every token and the router's weights (zero off the top k) mix the results. That costs
num_experts / k times the FLOPs of a sparse dispatch, but it is one batched matmul per projection with static
shapes, which is what CPU graph mode runs well; a token-dropping sparse dispatch is future work.
"""
from typing import Tuple

import mindspore as ms
from mindspore import nn, ops

from .layers import Linear, broadcast, expand_to

# a router's per-step expert load (DeepSeek's bias balancing): model state reset every step, not a weight
EXPERT_LOAD = "expert_load"


def is_step_state(name: str) -> bool:
    """Whether a parameter holds per-step statistics rather than weights: Hugging Face checkpoints lack it and a
    checkpoint without it still loads."""
    return name.rsplit(".", 1)[-1] == EXPERT_LOAD


# Hugging Face attribute names of an expert's (gate, up, down) projections per family.
EXPERT_NAMES = {
    "mixtral": ("w1", "w3", "w2"),
    "qwen": ("gate_proj", "up_proj", "down_proj"),
}


class Expert(nn.Cell):
    """One SwiGLU expert down(silu(gate(x)) * up(x)) whose projections carry the family's attribute names."""

    def __init__(self, hidden_size: int, ffn_size: int, names: Tuple[str, str, str] = EXPERT_NAMES["qwen"],
                 init_std: float = 0.02, param_dtype: ms.dtype = ms.float32, compute_dtype: ms.dtype = ms.float32):
        super().__init__()
        self.names = names
        gate, up, down = names
        setattr(self, gate, Linear(hidden_size, ffn_size, False, init_std, param_dtype, compute_dtype))
        setattr(self, up, Linear(hidden_size, ffn_size, False, init_std, param_dtype, compute_dtype))
        setattr(self, down, Linear(ffn_size, hidden_size, False, init_std, param_dtype, compute_dtype))

    def projections(self) -> Tuple[nn.Cell, nn.Cell, nn.Cell]:
        """The (gate, up, down) Linear cells."""
        gate, up, down = self.names
        return getattr(self, gate), getattr(self, up), getattr(self, down)

    def construct(self, x):
        gate, up, down = self.projections()
        return down(ops.silu(gate(x)) * up(x))


def route(router_logits, top_k: int, norm_topk_prob: bool):
    """Router logits (N, E) -> dense mixing weights (N, E) (zero outside each token's top k), probs, picks."""
    probs = ops.softmax(ops.cast(router_logits, ms.float32), -1)  # (N, E)
    weights, picks = ops.topk(probs, top_k)  # (N, k) each
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdims=True)
    chosen = ops.one_hot(picks, probs.shape[-1], ops.ones((), ms.float32), ops.zeros((), ms.float32))  # (N, k, E)
    combine = (chosen * weights.expand_dims(-1)).sum(1)  # (N, E)
    return combine, probs, chosen


def load_balancing_loss(probs, chosen):
    """Switch-Transformer auxiliary loss E * sum_e f_e * P_e for one layer.

    f_e is the number of top-k slots that picked expert e per token (averaged over tokens) and P_e the mean
    router probability of e; perfectly balanced routing gives k, as in Hugging Face's Mixtral.
    """
    num_experts = probs.shape[-1]
    tokens_per_expert = chosen.sum(1).mean(0)  # (E,)
    prob_per_expert = probs.mean(0)  # (E,)
    return num_experts * (tokens_per_expert * prob_per_expert).sum()


def mix_experts(x, combine, experts, bmm, compute_dtype):
    """sum_e combine[:, e] * expert_e(x) for tokens x (N, C) and routing weights combine (N, E), every expert
    run densely as three batched matmuls over its stacked (E, out, in) weights; returns (N, C)."""
    def stacked(index):
        return ops.stack([ops.cast(expert.projections()[index].weight, compute_dtype) for expert in experts])

    xe = broadcast(x, (len(experts),) + x.shape)  # (E, N, C)
    h = ops.silu(bmm(xe, stacked(0))) * bmm(xe, stacked(1))  # (E, N, F)
    y = bmm(h, stacked(2))  # (E, N, C)
    return (y * expand_to(ops.cast(combine.T, y.dtype).expand_dims(-1), y.shape)).sum(0)


class MoE(nn.Cell):
    """Top-k routed SwiGLU experts (B, T, C) -> (B, T, C); `with_aux_loss` also returns the balancing loss.

    Parameters are `gate.weight` (E, C) and `experts.<e>.<name>.weight`, the Hugging Face layout.
    """

    def __init__(self, hidden_size: int, ffn_size: int, num_experts: int, top_k: int, norm_topk_prob: bool = True,
                 expert_names: Tuple[str, str, str] = EXPERT_NAMES["qwen"], init_std: float = 0.02,
                 param_dtype: ms.dtype = ms.float32, compute_dtype: ms.dtype = ms.float32):
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"model_config.num_experts_per_tok must be in [1, num_experts={num_experts}], "
                             f"got {top_k}")
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.compute_dtype = compute_dtype
        self.gate = Linear(hidden_size, num_experts, False, init_std, param_dtype, compute_dtype)
        self.experts = nn.CellList([Expert(hidden_size, ffn_size, expert_names, init_std, param_dtype, compute_dtype)
                                    for _ in range(num_experts)])
        self.bmm = ops.BatchMatMul(transpose_b=True)

    def with_aux_loss(self, x):
        """(output (B, T, C), load-balancing loss (scalar fp32))."""
        lead = x.shape[:-1]
        x = ops.cast(x, self.compute_dtype).reshape(-1, self.hidden_size)  # (N, C)
        combine, probs, chosen = route(self.gate(x), self.top_k, self.norm_topk_prob)
        y = mix_experts(x, combine, self.experts, self.bmm, self.compute_dtype)  # (N, C)
        return y.reshape(lead + (self.hidden_size,)), load_balancing_loss(probs, chosen)

    def construct(self, x):
        return self.with_aux_loss(x)[0]
