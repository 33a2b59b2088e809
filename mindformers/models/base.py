"""Pieces every model family shares: the model contract (CausalLM), config plumbing, dtype checks, the causal-LM
loss."""
import inspect
import logging
import numbers
from typing import Any, Dict, Iterable, Protocol, Tuple, runtime_checkable

import mindspore as ms
from mindspore import nn, ops

from mindformers.modules.layers import broadcast

logger = logging.getLogger(__name__)

DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def positive_int(key: str, value: Any):
    """Raise naming model_config.`key` unless `value` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"model_config.{key} must be a positive int, got {value!r}")


def non_negative_int(key: str, value: Any):
    """Raise naming model_config.`key` unless `value` is an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"model_config.{key} must be an int >= 0, got {value!r}")


def positive_number(key: str, value: Any):
    """Raise naming model_config.`key` unless `value` is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(f"model_config.{key} must be a positive number, got {value!r}")


def boolean(key: str, value: Any):
    """Raise naming model_config.`key` unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"model_config.{key} must be True or False, got {value!r}")


def check_dtype(key: str, value: Any) -> str:
    """Return `value` if it names a supported dtype, else raise naming the config key."""
    if value not in DTYPES:
        raise ValueError(f"model_config.{key} must be one of {', '.join(DTYPES)}, got {value!r}")
    return value


def check_dtypes_on_device(config: "BaseConfig", keys: Iterable[str], device: str):
    """bfloat16 has no CPU kernels in MindSpore: on CPU those keys fall back to float32 (set on `config`, with
    one notice naming them); float16 runs on CPU but slower: warn. Other devices keep the dtypes."""
    if device != "CPU":
        return
    values = {key: getattr(config, key) for key in keys}
    bf16 = [key for key, value in values.items() if value == "bfloat16"]
    if bf16:
        for key in bf16:
            setattr(config, key, "float32")
        logger.warning("model_config %s: bfloat16 has no CPU kernels in MindSpore, so these run in float32 on "
                       "CPU (bfloat16 is kept on Ascend)", ", ".join(bf16))
    fp16 = [key for key, value in values.items() if value == "float16"]
    if fp16:
        logger.warning("model_config %s = float16 on CPU: it runs, but slower than float32 and with more "
                       "memory; float32 is the CPU default", ", ".join(fp16))


@runtime_checkable
class CausalLM(Protocol):
    """What the trainer, generation and evaluation use of a registered model (`model.arch.type`); every family
    conforms (tests/models/test_contract.py).

    Optional capabilities are attributes, not class names: `lora_config` (LoRA adapters applied, see
    pet.has_lora) and a `score` head (alignment.RewardModel wraps any CausalLM).
    """

    config: Any  # the family's BaseConfig: seq_length, vocab_size, ignore_token_id, generation, flops_per_token() ...
    training: bool

    def construct(self, input_ids, labels=None, position_ids=None):
        """Training: input_ids (B, S+1) -> mean fp32 loss of predicting input_ids[:, 1:] (or labels[:, 1:]);
        inference (set_train(False)): fp32 logits (B, T, vocab)."""

    def logits(self, input_ids):
        """fp32 logits (B, T, vocab) for input_ids (B, T)."""

    def logits_at(self, input_ids, index):
        """fp32 logits (B, K, vocab) at positions `index` (B, K) of each row of input_ids (B, T) only."""

    def forward_positions(self, input_ids, positions, mask):
        """fp32 logits (B, T, vocab) for explicit positions (B, T) and a bool attention mask (B, T, T)."""

    def init_kv_caches(self, batch_size: int, cache_len: int) -> Tuple:
        """Zeroed static KV caches, one entry per layer."""

    def prefill(self, input_ids, positions, mask, kv_caches):
        """The prompt (B, P) into empty caches: last-position logits (B, vocab) and the caches."""

    def decode(self, input_ids, positions, mask, kv_caches, slot):
        """One token per row (B, 1) written at cache slot `slot`: logits (B, vocab) and the caches."""

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (without the input embedding table when asked)."""

    def flops_per_token(self) -> int:
        """Training FLOPs per token at seq_length, for MFU."""


class BaseConfig:
    """A model config: constructor keys are the YAML keys; `to_dict` gives them back.

    The object itself holds architecture fields only. Keys upstream also keeps in `model_config` that are not
    the architecture (generation defaults, parallel settings, weights to load, device layout hints) live in
    the dict attribute named by `SECTIONS[key]`; the upstream name still reads and writes them there, so
    `config.use_past = True` in a notebook reaches `config.generation`.
    """

    SECTIONS: Dict[str, str] = {}

    def __getattr__(self, key):  # only called when normal lookup fails
        section = type(self).SECTIONS.get(key)
        if section is None or section not in vars(self):
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
        return vars(self)[section][key]

    def __setattr__(self, key, value):
        section = type(self).SECTIONS.get(key)
        if section is not None and section in vars(self):
            vars(self)[section][key] = value
        else:
            object.__setattr__(self, key, value)

    def to_dict(self) -> Dict[str, Any]:
        """The constructor arguments as a plain dict (`type(config)(**config.to_dict())` rebuilds it)."""
        keys = []
        # A subclass may add keys and pass the rest on with **kwargs: walk up until an __init__ takes none.
        for cls in type(self).__mro__:
            if "__init__" not in vars(cls):
                continue
            params = list(inspect.signature(vars(cls)["__init__"]).parameters.values())
            keys += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                     and p.name not in keys]
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
        return {key: getattr(self, key) for key in keys}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({body})"


class TokenNLL(nn.Cell):
    """-log softmax(logits)[target] per row: logits (N, V) fp32, targets (N, 1) int32 class indices -> (N, 1).

    The backward is the closed form (softmax(logits) - onehot(target)) * dout: on CPU MindSpore's
    LogSoftmaxGrad took 0.6-0.7 s of a 7 s 55M-model step on (2048, 32000) logits; softmax, a tiled dout, a
    multiply and a scatter at the targets take a fraction of that.
    """

    def __init__(self):
        super().__init__()
        self.softmax = ops.Softmax(-1)  # the primitive: ops.softmax in a bprop failed to compile in a full model

    def construct(self, logits, targets):
        return -ops.gather_elements(ops.log_softmax(logits, -1), 1, targets)

    def bprop(self, logits, targets, out, dout):
        grad = self.softmax(logits) * broadcast(dout, logits.shape)
        rows = ops.arange(targets.shape[0], dtype=targets.dtype).reshape(-1, 1)
        # x + (-d) equals x - d exactly; TensorScatterSub is deprecated from MindSpore 2.10
        grad = ops.tensor_scatter_add(grad, ops.concat((rows, targets), 1), -dout.reshape(-1))
        return grad, ops.zeros_like(targets)


_TOKEN_NLL = TokenNLL()


def token_logprobs(logits, targets, ignore_index: int = -100):
    """log p(target) per position (0 where the target is ignore_index) and the 0/1 mask of scored positions,
    both (B, T) fp32, for logits (B, T, V) and targets (B, T): the one token log-prob of the package (training
    loss, evaluation, preference losses), with TokenNLL's closed-form backward."""
    B, T, V = logits.shape
    valid = targets != ignore_index
    mask = ops.cast(valid, ms.float32)
    # Gather needs a valid index everywhere; masked positions point at class 0 and are zeroed by `mask`.
    safe = ops.cast(targets * ops.cast(valid, targets.dtype), ms.int32).reshape(-1, 1)
    nll = _TOKEN_NLL(ops.cast(logits, ms.float32).reshape(-1, V), safe).reshape(B, T)
    return -nll * mask, mask


def causal_lm_loss(logits, targets, ignore_index: int = -100):
    """Mean cross-entropy (fp32) of logits (B, T, V) against targets (B, T), skipping ignore_index targets."""
    logp, mask = token_logprobs(logits, targets, ignore_index)
    # All-masked batches (e.g. a prompt-only sample) give 0, not NaN.
    return -logp.sum() / ops.maximum(mask.sum(), 1.0)


class CausalLMLoss(nn.Cell):
    """`causal_lm_loss` as the model's `lm_loss` cell, so tensor parallel can put a vocabulary-parallel loss in its
    place (parallel/tensor_parallel.py)."""

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index

    def construct(self, logits, targets):
        return causal_lm_loss(logits, targets, self.ignore_index)
