"""Shard plans: how `parallel_config` splits a model's parameters and ops over a device mesh.

The mesh has four axes, `pp` (pipeline stage), `dp` (data), `cp` (context/sequence) and `mp` (model/tensor),
with mp varying fastest: rank = ((stage * dp + d) * cp + c) * mp + m. Expert parallelism (`ep`) is carved out
of the data axis in contiguous blocks, the device order of an expert BatchMatMul sharded (ep, dp / ep, ..):
expert e of E lives on the ranks whose data index d has d // (dp / ep) == e // (E / ep).

Parameters are classified by their Hugging Face names, so every family built on the shared modules gets a
plan without code of its own:
- column parallel (output rows split over mp): q/k/v, gate/up projections (and their biases);
- row parallel (input columns split over mp): o_proj, down_proj; MindSpore adds the all-reduce;
- vocabulary parallel: embed_tokens (unless vocab_emb_dp) and lm_head rows over mp;
- MoE experts are whole over mp and spread over the expert groups (one BatchMatMul runs them all, apply.py);
- everything else (norms, routers, low-rank MLA down projections) is replicated, and so is GLM-4's fused
  gate_up_proj: it stacks gate rows over up rows, so a contiguous split would give one rank only gate rows and
  another only up rows, while each rank needs matching slices of both (MindSpore redistributes its output for
  the row-parallel down_proj).
Decoder layer L sits on pipeline stage L * pp // num_layers; embeddings on the first stage, the final norm and
lm_head on the last. The plan is plain data (a JSON strategy file), used to check a layout before any device
is touched, to set MindSpore shard strategies (`apply_plan`, semi-auto parallel on Ascend), and to slice
and merge per-rank checkpoints (mindformers/checkpoint/sharded.py).
"""
import json
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

FORMAT = "mindformers-shard-plan/1"
AXES = ("pp", "dp", "cp", "mp")

_COLUMN = re.compile(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj|q_b_proj|kv_b_proj|wqkv|w1|w3)"
                     r"\.(weight|bias)$")
_ROW = re.compile(r"\.(o_proj|down_proj|wo|w2)\.weight$")
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|tok_embeddings)\.weight$")
_HEAD = re.compile(r"(^|\.)(lm_head|output)\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")


@dataclass(frozen=True)
class MeshLayout:
    """The device mesh of `parallel_config` (upstream key names) for `device_num` devices."""
    dp: int = 1
    mp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    micro_batch_num: int = 1
    use_seq_parallel: bool = False
    vocab_emb_dp: bool = True
    optimizer_shard: bool = False

    @property
    def device_num(self) -> int:
        return self.dp * self.mp * self.pp * self.cp

    @classmethod
    def from_config(cls, parallel_config: Optional[dict], device_num: Optional[int] = None) -> "MeshLayout":
        """From a `parallel_config` section; checks the axes multiply to `device_num` when it is given."""
        cfg = dict(parallel_config or {})
        keys = {"data_parallel": "dp", "model_parallel": "mp", "pipeline_stage": "pp", "context_parallel": "cp",
                "expert_parallel": "ep", "micro_batch_num": "micro_batch_num"}
        values = {}
        for key, field in keys.items():
            value = cfg.get(key, 1)
            if value is None:
                value = 1
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel_config.{key} must be an int >= 1, got {value!r}")
            values[field] = value
        for key in ("use_seq_parallel", "vocab_emb_dp", "optimizer_shard"):
            if cfg.get(key) is not None:
                if not isinstance(cfg[key], bool):
                    raise ValueError(f"parallel_config.{key} must be true or false, got {cfg[key]!r}")
                values[key] = cfg[key]
        layout = cls(**values)
        if device_num is not None and layout.device_num != device_num:
            raise ValueError(f"parallel_config: data_parallel ({layout.dp}) x model_parallel ({layout.mp}) x "
                             f"pipeline_stage ({layout.pp}) x context_parallel ({layout.cp}) = {layout.device_num}, "
                             f"but {device_num} devices run; make the product equal the device count")
        if layout.dp % layout.ep:
            raise ValueError(f"parallel_config.expert_parallel ({layout.ep}) must divide data_parallel "
                             f"({layout.dp}): experts are spread over a part of the data-parallel axis")
        if layout.pp > 1 and layout.micro_batch_num < layout.pp:
            raise ValueError(f"parallel_config.micro_batch_num ({layout.micro_batch_num}) must be >= pipeline_stage "
                             f"({layout.pp}) so every stage has work in flight")
        return layout

    def coords(self, rank: int) -> Dict[str, int]:
        """Mesh coordinates {pp, dp, cp, mp} of `rank`."""
        if not 0 <= rank < self.device_num:
            raise ValueError(f"rank {rank} is outside the mesh of {self.device_num} devices")
        out = {}
        for axis in reversed(AXES):
            size = getattr(self, axis)
            out[axis] = rank % size
            rank //= size
        return {axis: out[axis] for axis in AXES}

    def rank(self, pp: int = 0, dp: int = 0, cp: int = 0, mp: int = 0) -> int:
        return ((pp * self.dp + dp) * self.cp + cp) * self.mp + mp


@dataclass(frozen=True)
class ParamPlan:
    """One parameter: full shape, which mesh axis splits each dim (None = whole), stage, expert group."""
    shape: Tuple[int, ...]
    split: Tuple[Optional[str], ...]
    stages: Tuple[int, ...]
    expert_group: Optional[int] = None


class ShardPlan:
    """Parameter layouts and op strategies for one model on one mesh."""

    def __init__(self, layout: MeshLayout, params: Dict[str, ParamPlan], num_layers: int):
        self.layout, self.params, self.num_layers = layout, params, num_layers

    # ------------------------------------------------------------------ build
    @classmethod
    def for_network(cls, network, layout: MeshLayout) -> "ShardPlan":
        """The plan for a built network (names and shapes are read from its parameters)."""
        shapes = {p.name: tuple(int(d) for d in p.shape) for p in network.get_parameters()}
        return cls.for_shapes(shapes, network.config, layout)

    @classmethod
    def for_shapes(cls, shapes: Dict[str, Tuple[int, ...]], config, layout: MeshLayout) -> "ShardPlan":
        num_layers = int(getattr(config, "num_layers", 0) or 1 + max(
            (int(m.group(1)) for m in map(_LAYER.search, shapes) if m), default=0))
        _check_config(config, layout, num_layers)
        num_experts = 1 + max((int(m.group(1)) for m in map(_EXPERT.search, shapes) if m), default=-1)
        if layout.ep > 1 and num_experts == 0:
            raise ValueError(f"parallel_config.expert_parallel ({layout.ep}) spreads MoE experts, but this model "
                             f"has none; set it to 1")
        params = {}
        for name, shape in shapes.items():
            split: List[Optional[str]] = [None] * len(shape)
            if _EXPERT.search(name):
                pass  # experts stay whole over mp: one BatchMatMul serves their gate, up and down (apply.py)
            elif _COLUMN.search(name):
                split[0] = "mp"
            elif _ROW.search(name):
                split[1] = "mp"
            elif _HEAD.search(name) or (_EMBEDDING.search(name) and not layout.vocab_emb_dp):
                split[0] = "mp"
            for dim, axis in enumerate(split):
                if axis and shape[dim] % layout.mp:
                    raise ValueError(f"parallel_config.model_parallel ({layout.mp}) must divide dim {dim} of {name} "
                                     f"{shape}; choose a model_parallel that divides it")
            expert = _EXPERT.search(name)
            group = None
            if expert:
                if num_experts % layout.ep:
                    raise ValueError(f"parallel_config.expert_parallel ({layout.ep}) must divide the number of "
                                     f"experts ({num_experts})")
                group = int(expert.group(1)) // (num_experts // layout.ep)
            params[name] = ParamPlan(tuple(shape), tuple(split), _stages(name, num_layers, layout.pp, config), group)
        return cls(layout, params, num_layers)

    # ------------------------------------------------------------------ query
    def stage_of_layer(self, layer: int) -> int:
        return layer * self.layout.pp // self.num_layers

    def holds(self, name: str, rank: int) -> bool:
        """Whether `rank` keeps a slice of parameter `name`."""
        plan, c = self.params[name], self.layout.coords(rank)
        if c["pp"] not in plan.stages:
            return False
        return plan.expert_group is None or self.expert_group_of(c["dp"]) == plan.expert_group

    def expert_group_of(self, dp_index: int) -> int:
        """The expert group of data-parallel index `dp_index`: contiguous blocks of dp / ep (MindSpore's order)."""
        return dp_index // (self.layout.dp // self.layout.ep)

    def slice_index(self, name: str, rank: int) -> Tuple[slice, ...]:
        """The index of `rank`'s slice in the full parameter."""
        plan, c = self.params[name], self.layout.coords(rank)
        index = []
        for size, axis in zip(plan.shape, plan.split):
            if axis is None:
                index.append(slice(None))
            else:
                parts = getattr(self.layout, axis)
                step = size // parts
                index.append(slice(c[axis] * step, (c[axis] + 1) * step))
        return tuple(index)

    def local_shape(self, name: str) -> Tuple[int, ...]:
        plan = self.params[name]
        return tuple(s // (getattr(self.layout, a) if a else 1) for s, a in zip(plan.shape, plan.split))

    def rank_bytes(self, rank: int, bytes_per_value: int = 4) -> int:
        """Parameter bytes one rank holds (a memory estimate before launching)."""
        total = 0
        for name in self.params:
            if self.holds(name, rank):
                size = 1
                for d in self.local_shape(name):
                    size *= d
                total += size * bytes_per_value
        return total

    def describe(self) -> str:
        """A table of the mesh, stages and per-parameter layouts."""
        lay = self.layout
        lines = [f"mesh: dp={lay.dp} mp={lay.mp} pp={lay.pp} cp={lay.cp} ep={lay.ep} -> {lay.device_num} devices; "
                 f"micro_batch_num={lay.micro_batch_num} use_seq_parallel={lay.use_seq_parallel} "
                 f"vocab_emb_dp={lay.vocab_emb_dp} optimizer_shard={lay.optimizer_shard}"]
        if lay.pp > 1:
            stages = [[layer for layer in range(self.num_layers) if self.stage_of_layer(layer) == s]
                      for s in range(lay.pp)]
            lines.append("stages: " + "; ".join(f"{s}: layers {r[0]}-{r[-1]}" if r else f"{s}: (none)"
                                                for s, r in enumerate(stages)))
        most = max(self.rank_bytes(r) for r in range(lay.device_num))
        total = sum(_numel(p.shape) for p in self.params.values()) * 4
        lines.append(f"per-rank parameters (fp32): max {most / 2**20:.1f} MiB, total {total / 2**20:.1f} MiB")
        for name, plan in self.params.items():
            if not _LAYER.search(name) or ".layers.0." in name:
                split = ",".join(a or "-" for a in plan.split)
                extra = f" expert_group {plan.expert_group}" if plan.expert_group is not None else ""
                lines.append(f"  {name:<48} {str(plan.shape):<16} split [{split}] stage {list(plan.stages)}{extra}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "layout": asdict(self.layout), "num_layers": self.num_layers,
                "params": {n: {"shape": list(p.shape), "split": list(p.split), "stages": list(p.stages),
                               "expert_group": p.expert_group} for n, p in self.params.items()}}

    def save(self, path: str):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "ShardPlan":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"strategy file {path}: cannot read it ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"strategy file {path}: not a {FORMAT} file (written by mindformers' shard plans)")
        params = {n: ParamPlan(tuple(p["shape"]), tuple(p["split"]), tuple(p["stages"]), p.get("expert_group"))
                  for n, p in data["params"].items()}
        return cls(MeshLayout(**data["layout"]), params, int(data["num_layers"]))


def param_of(key: str, names) -> Optional[str]:
    """The parameter (one of `names`) a checkpoint entry is cut like: itself, or `<parameter>` for optimizer state
    `<prefix>.<parameter>` (adam_m., accu_grads., ...); None for entries of no parameter (step counters, the loss
    scale), which every rank holds whole."""
    if key in names:
        return key
    name = key.split(".", 1)[-1]
    return name if name in names else None


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _stages(name: str, num_layers: int, pp: int, config) -> Tuple[int, ...]:
    layer = _LAYER.search(name)
    if layer:
        return (int(layer.group(1)) * pp // num_layers,)
    if _EMBEDDING.search(name):
        # a tied embedding is also the output projection, so the last stage needs it too
        return (0, pp - 1) if getattr(config, "tie_word_embeddings", False) and pp > 1 else (0,)
    if _HEAD.search(name) or name.endswith("model.norm.weight"):
        return (pp - 1,)
    return tuple(range(pp))


def _check_config(config, layout: MeshLayout, num_layers: int):
    """Head, layer and sequence divisibility that parameter shapes alone do not show."""
    mp = layout.mp
    for key in ("num_heads", "n_kv_heads"):
        value = getattr(config, key, None)
        if value and value % mp:
            raise ValueError(f"parallel_config.model_parallel ({mp}) must divide model_config.{key} ({value}): "
                             f"attention heads are split whole over model_parallel")
    if num_layers < layout.pp:
        raise ValueError(f"parallel_config.pipeline_stage ({layout.pp}) exceeds model_config.num_layers "
                         f"({num_layers}); every stage needs at least one layer")
    seq = getattr(config, "seq_length", None)
    if seq and seq % layout.cp:
        raise ValueError(f"parallel_config.context_parallel ({layout.cp}) must divide model_config.seq_length "
                         f"({seq})")
    if layout.use_seq_parallel and seq and seq % mp:
        raise ValueError(f"parallel_config.use_seq_parallel splits the sequence over model_parallel ({mp}), which "
                         f"must divide model_config.seq_length ({seq})")
