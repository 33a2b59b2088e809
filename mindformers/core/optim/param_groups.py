"""Split a model's parameters into weight-decay and no-decay groups."""
from typing import Iterable, List

from mindspore import nn


def get_optimizer_grouped_parameters(model: nn.Cell, weight_decay: float,
                                     no_decay_keywords: Iterable[str] = ("bias", "norm")) -> List[dict]:
    """Optimizer groups: trainable weights decay by `weight_decay`; 1-D params (norms, biases) and names
    containing a `no_decay_keywords` entry do not. Embeddings are 2-D and decay, as in Hugging Face."""
    keywords = tuple(k.lower() for k in no_decay_keywords)
    decay, no_decay = [], []
    for param in model.trainable_params():
        exempt = len(param.shape) <= 1 or any(k in param.name.lower() for k in keywords)
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
