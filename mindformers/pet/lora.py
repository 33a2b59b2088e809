"""LoRA (Hu et al. 2021): frozen base weights plus a trainable low-rank update on chosen Linear layers.

y = x W^T + (lora_alpha / lora_rank) * dropout(x) A^T B^T, with A (rank, in) drawn like torch's
kaiming-uniform(a=sqrt(5)) and B (out, rank) zero, so training starts from the base model exactly.
`pet_config` (upstream key, inside model_config):

    pet_config: {pet_type: lora, lora_rank: 8, lora_alpha: 16, lora_dropout: 0.05,
                 target_modules: '.*(q_proj|v_proj)'}     # a regex (or a list of them) on Linear cell paths

Adapter parameters are named `<linear path>.lora_A.weight` / `.lora_B.weight`; adapters save to and load from
a PEFT-style directory (adapter_config.json + adapter_model.safetensors with `base_model.model.` prefixed names),
and merge into the base weights (W += scale * B A) for plain inference.
"""
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Union

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, initializer

from ..modules.layers import Linear

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraConfig:
    """The `pet_config` section for pet_type lora."""
    pet_type: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: Union[str, List[str]] = r".*(q_proj|v_proj)"
    exclude_layers: List[str] = field(default_factory=list)
    adapter_dir: str = ""  # an adapter directory (save_adapter/PEFT layout) to load after the base weights

    @classmethod
    def from_config(cls, pet_config) -> "LoraConfig":
        values = dict(pet_config or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model_config.pet_config: unknown keys {unknown}; valid: {', '.join(sorted(known))}")
        config = cls(**values)
        if config.pet_type in ("qlora", "slora", "ptuning2", "prefixtuning"):
            raise ValueError(f"model_config.pet_config.pet_type '{config.pet_type}' is not supported: quantized "
                             f"(int8/nf4) base weights have no MindSpore CPU kernels; use pet_type: lora")
        if config.pet_type != "lora":
            raise ValueError(f"model_config.pet_config.pet_type must be 'lora', got {config.pet_type!r}")
        if isinstance(config.lora_rank, bool) or not isinstance(config.lora_rank, int) or config.lora_rank < 1:
            raise ValueError(f"model_config.pet_config.lora_rank must be an int >= 1, got {config.lora_rank!r}")
        if not 0.0 <= float(config.lora_dropout) < 1.0:
            raise ValueError(f"model_config.pet_config.lora_dropout must be in [0, 1), got {config.lora_dropout!r}")
        patterns = [config.target_modules] if isinstance(config.target_modules, str) else list(config.target_modules)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"model_config.pet_config.target_modules {pattern!r} is not a valid regex "
                                 f"({err})") from None
        return config

    @property
    def scale(self) -> float:
        return float(self.lora_alpha) / self.lora_rank

    def matches(self, path: str) -> bool:
        patterns = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
        if any(re.search(p, path) for p in self.exclude_layers):
            return False
        return any(re.fullmatch(p, path) for p in patterns)


class LoRALinear(Linear):
    """A Linear whose base weight (and bias) stay frozen, plus a trainable low-rank update."""

    def __init__(self, base: Linear, path: str, config: LoraConfig):
        nn.Cell.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.compute_dtype = base.compute_dtype
        self.weight, self.bias, self.matmul = base.weight, base.bias, base.matmul
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        rank = config.lora_rank
        # kaiming-uniform with a = sqrt(5) (bound 1/sqrt(in)), as PEFT; drawn from MindSpore's seeded RNG
        init = initializer(HeUniform(negative_slope=math.sqrt(5)), (rank, self.in_features), self.weight.dtype)
        self.lora_a = Parameter(init, name=f"{path}.lora_A.weight")
        self.lora_b = Parameter(Tensor(np.zeros((self.out_features, rank), np.float32), self.weight.dtype),
                                name=f"{path}.lora_B.weight")
        self.scale = config.scale
        self.dropout = nn.Dropout(p=float(config.lora_dropout)) if config.lora_dropout else nn.Identity()
        self.lora_matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        y = super().construct(x)  # the frozen base projection
        flat = ops.cast(x, self.compute_dtype).reshape(-1, self.in_features)
        low = self.lora_matmul(self.dropout(flat), ops.cast(self.lora_a, self.compute_dtype))
        update = self.lora_matmul(low, ops.cast(self.lora_b, self.compute_dtype)) * self.scale
        return y + update.reshape(y.shape)

    def merged_weight(self) -> np.ndarray:
        """W + scale * B A as float32."""
        return (self.weight.asnumpy().astype(np.float32)
                + self.scale * self.lora_b.asnumpy().astype(np.float32) @ self.lora_a.asnumpy().astype(np.float32))


def _parent(network: nn.Cell, path: str):
    parent = network
    parts = path.split(".")
    for part in parts[:-1]:
        parent = parent._cells[part]  # noqa: SLF001  (CellList children are keyed by index strings too)
    return parent, parts[-1]


def has_lora(network) -> bool:
    """Whether LoRA adapters are applied to `network` (apply_lora sets `lora_config`, merge_lora removes it)."""
    return getattr(network, "lora_config", None) is not None


def apply_lora(network: nn.Cell, pet_config) -> List[str]:
    """Wrap every Linear whose path matches `target_modules`; freeze everything else. Returns the paths."""
    config = pet_config if isinstance(pet_config, LoraConfig) else LoraConfig.from_config(pet_config)
    targets = [path for path, cell in network.cells_and_names()
               if isinstance(cell, Linear) and not isinstance(cell, LoRALinear) and config.matches(path)]
    if not targets:
        linears = [path for path, cell in network.cells_and_names() if isinstance(cell, Linear)]
        raise ValueError(f"model_config.pet_config.target_modules {config.target_modules!r} matches no Linear layer; "
                         f"layer paths look like {', '.join(linears[:4])}")
    for param in network.get_parameters():
        param.requires_grad = False
    for path in targets:
        parent, name = _parent(network, path)
        parent._cells[name] = LoRALinear(parent._cells[name], path, config)  # noqa: SLF001
    network.lora_config = config
    _structure_changed(network)
    return targets


def _structure_changed(network: nn.Cell):
    """Graphs compiled before cells were swapped must not be reused: give the network a new compile identity
    (MindSpore keys compiled graphs by the cell's create time; generation's cached graphs check it too)."""
    object.__setattr__(network, "_create_time", time.time_ns())


def lora_cells(network: nn.Cell) -> Dict[str, LoRALinear]:
    return {path: cell for path, cell in network.cells_and_names() if isinstance(cell, LoRALinear)}


def adapter_weights(network: nn.Cell) -> Dict[str, np.ndarray]:
    """name -> value of every adapter parameter."""
    out = {}
    for cell in lora_cells(network).values():
        for param in (cell.lora_a, cell.lora_b):
            out[param.name] = param.asnumpy()
    return out


def save_adapter(network: nn.Cell, directory: str) -> str:
    """Write adapter_config.json + adapter_model.safetensors (PEFT-style names) for the network's adapters."""
    from safetensors.numpy import save_file

    config = getattr(network, "lora_config", None)
    if config is None:
        raise ValueError("save_adapter: the network has no LoRA adapters (apply_lora first)")
    os.makedirs(directory, exist_ok=True)
    weights = {_PEFT_PREFIX + name: value for name, value in adapter_weights(network).items()}
    save_file(weights, os.path.join(directory, ADAPTER_WEIGHTS))
    modules = sorted({path.rsplit(".", 1)[-1] for path in lora_cells(network)})
    peft = {"peft_type": "LORA", "r": config.lora_rank, "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout, "target_modules": modules, "bias": "none",
            "task_type": "CAUSAL_LM", "mindformers_pet_config": {**asdict(config), "adapter_dir": ""}}
    with open(os.path.join(directory, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(peft, f, indent=2)
    return directory


def load_adapter(network: nn.Cell, directory: str) -> List[str]:
    """Apply LoRA as the adapter directory describes and load its weights; returns the adapted paths."""
    from safetensors.numpy import load_file

    config_path, weights_path = os.path.join(directory, ADAPTER_CONFIG), os.path.join(directory, ADAPTER_WEIGHTS)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LoRA adapter {directory}: {os.path.basename(path)} is missing")
    with open(config_path, encoding="utf-8") as f:
        peft = json.load(f)
    pet = peft.get("mindformers_pet_config") or {
        "lora_rank": peft["r"], "lora_alpha": peft["lora_alpha"], "lora_dropout": peft.get("lora_dropout", 0.0),
        "target_modules": rf".*\.({'|'.join(map(re.escape, peft['target_modules']))})"}
    paths = list(lora_cells(network)) if has_lora(network) else apply_lora(network, pet)
    weights = {name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name: value
               for name, value in load_file(weights_path).items()}
    params = {p.name: p for cell in lora_cells(network).values() for p in (cell.lora_a, cell.lora_b)}
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ValueError(f"LoRA adapter {directory} does not fit the model: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")
    for name, param in params.items():
        if tuple(weights[name].shape) != tuple(param.shape):
            raise ValueError(f"LoRA adapter {directory}: {name} has shape {tuple(weights[name].shape)}, the model "
                             f"needs {tuple(param.shape)} (another lora_rank or base model?)")
        param.set_data(Tensor(weights[name].astype(np.float32), param.dtype))
    return paths


def merge_lora(network: nn.Cell) -> int:
    """Fold every adapter into its base weight and put the plain Linear back; returns how many were merged."""
    cells = lora_cells(network)
    for path, cell in cells.items():
        cell.weight.set_data(Tensor(cell.merged_weight(), cell.weight.dtype))
        base = Linear.__new__(Linear)
        nn.Cell.__init__(base)
        base.in_features, base.out_features, base.compute_dtype = cell.in_features, cell.out_features, \
            cell.compute_dtype
        base.weight, base.bias, base.matmul = cell.weight, cell.bias, cell.matmul
        parent, name = _parent(network, path)
        parent._cells[name] = base  # noqa: SLF001
    for param in network.get_parameters():
        param.requires_grad = True
    if has_lora(network):
        del network.lora_config
    _structure_changed(network)
    return len(cells)


def trainable_summary(network: nn.Cell) -> str:
    total = sum(p.size for p in network.get_parameters())
    train = sum(p.size for p in network.trainable_params())
    return f"{train:,} of {total:,} parameters trainable ({100 * train / max(total, 1):.2f}%)"


__all__ = ["LoraConfig", "LoRALinear", "apply_lora", "adapter_weights", "save_adapter", "load_adapter",
           "merge_lora", "trainable_summary"]
