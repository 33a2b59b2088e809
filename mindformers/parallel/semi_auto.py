"""Semi-auto parallel (Ascend) beyond per-op strategies: pipeline stages and the pipeline cell, sequence-parallel
norms, the pipeline-stage group, and gathering optimizer-parallel slices for a checkpoint.

MindSpore 2.10 compiles a semi-auto graph only on Ascend ("Invalid backend: CPU"), so on CPU these are built and
their structure is checked (tests/parallel/test_semi_auto.py); none of it has run on Ascend hardware here.

- Pipeline: decoder layer L on stage L * pp // num_layers (the plan's rule); the embedding and the decoder's own
  ops (attention mask, rotary tables) on the first stage; the final norm, lm_head and the CausalLM's own ops,
  which compute the loss, on the last. `mindspore.parallel.nn.Pipeline` (2.10's name for nn.PipelineCell) cuts
  each step's batch into micro_batch_num micro-batches; core/context.py sets `pipeline_stages`.
- Sequence parallel (Megatron-style, upstream's use_seq_parallel): the hidden-state norms run on tokens split
  over (dp, cp * mp); row-parallel projections then reduce-scatter their output (MatMul out_strategy, set in
  apply.py) instead of all-reducing it, and MindSpore all-gathers before the next column-parallel projection.
  The suite's RMSNorm computes with functional ops, which take no strategy, so each such norm is switched to
  `SeqParallelRMSNorm`: the same arithmetic on primitives that carry one.
"""
import re
from typing import Dict, List

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ..modules.layers import RMSNorm
from .plan import MeshLayout, ShardPlan, param_of

_IN_LAYER = re.compile(r"(^|\.)layers\.(\d+)(\.|$)")


def stage_config(network: nn.Cell, plan: ShardPlan) -> Dict[str, int]:
    """{cell path: pipeline stage} for every cell below `network`, each set explicitly rather than left to
    inheritance: decoder layer L and all its sub-cells on the plan's stage of L; the rest of the decoder
    (embedding, rotary tables, the cell itself: mask) on stage 0 except its final norm; everything outside the
    decoder (lm_head, a reward head) on the last stage."""
    last = plan.layout.pp - 1
    decoders = [p for p, c in network.cells_and_names() if p and isinstance(getattr(c, "layers", None), nn.CellList)]
    stages = {}
    for path, _ in network.cells_and_names():
        if not path:
            continue
        layer = _IN_LAYER.search(path)
        decoder = next((d for d in decoders if path == d or path.startswith(d + ".")), None)
        if layer:
            stages[path] = plan.stage_of_layer(int(layer.group(2)))
        elif decoder is not None and not (path + ".").startswith(decoder + ".norm."):
            stages[path] = 0
        else:
            stages[path] = last
    return stages


def set_stages(network: nn.Cell, plan: ShardPlan) -> Dict[str, int]:
    """Set `pipeline_stage` on every cell of `stage_config`, and the last stage on the network itself (its own
    ops are the head's cast and the loss); returns the stages set ('' is the network)."""
    if any(p.expert_group is not None for p in plan.params.values()):
        # MoE training runs the layers' with_aux_loss methods, not their construct: cell calls are what
        # MindSpore's pipeline places on stages, so the layers' own ops would fall to the caller's stage
        raise ValueError("parallel_config.pipeline_stage > 1 is not wired for MoE models (their training forward "
                         "runs the decoder layers' with_aux_loss methods, not cell calls the pipeline can place); "
                         "set pipeline_stage: 1")
    stages = stage_config(network, plan)
    cells = dict(network.cells_and_names())
    for path, stage in stages.items():
        cells[path].pipeline_stage = stage
    network.pipeline_stage = plan.layout.pp - 1
    return {"": plan.layout.pp - 1, **stages}


def pipeline_cell(network: nn.Cell, micro_batch_num: int, plan: ShardPlan = None) -> nn.Cell:
    """`network` in MindSpore's Pipeline cell: micro_batch_num micro-batches per step, stages from the plan
    (`network.shard_plan`, set by apply_plan). A network already in a Pipeline is returned as it is."""
    from mindspore.parallel.nn import Pipeline

    if isinstance(network, Pipeline):
        return network
    plan = plan if plan is not None else getattr(network, "shard_plan", None)
    if plan is None or plan.layout.pp < 2:
        raise ValueError("a pipeline train step needs a network planned with parallel_config.pipeline_stage > 1 "
                         "(parallel/apply.py apply_plan)")
    if micro_batch_num < plan.layout.pp:
        raise ValueError(f"parallel_config.micro_batch_num ({micro_batch_num}) must be >= pipeline_stage "
                         f"({plan.layout.pp})")
    set_stages(network, plan)
    return Pipeline(network, micro_batch_num, stage_config=stage_config(network, plan))


def stage_group_ranks(layout: MeshLayout, rank: int) -> List[int]:
    """The ranks holding the same (dp, cp, mp) position on every stage: together they hold the whole model once."""
    c = layout.coords(rank)
    return [layout.rank(pp=s, dp=c["dp"], cp=c["cp"], mp=c["mp"]) for s in range(layout.pp)]


def create_stage_group(layout: MeshLayout, rank: int) -> str:
    """Create (communication must be initialised) and name this rank's pipeline-stage group."""
    from mindspore.communication import create_group

    ranks = stage_group_ranks(layout, rank)
    name = "pp_stages_" + "_".join(map(str, ranks))
    create_group(name, ranks)
    return name


class SeqParallelRMSNorm(RMSNorm):
    """RMSNorm on primitives, so each op carries the sequence-parallel strategy of `shard_sequence`."""

    def shard_sequence(self, strategy: tuple):
        """`strategy` for a (B, T, C) input, e.g. (dp, mp, 1): batch over dp, sequence over mp, features whole."""
        stats = strategy[:-1] + (1,)
        self.square = ops.Square().shard((strategy,))
        self.mean = ops.ReduceMean(keep_dims=True).shard((strategy,))
        self.rsqrt = ops.Rsqrt().shard((stats,))
        self.mul = ops.Mul().shard((strategy, stats))
        self.mul_weight = ops.Mul().shard((strategy, (1,)))
        self.sequence_strategy = strategy

    def construct(self, x):
        dtype = x.dtype
        x = ops.cast(x, self.compute_dtype)
        x = self.mul(x, self.rsqrt(self.mean(self.square(x), -1) + self.eps))
        return ops.cast(self.mul_weight(x, ops.cast(self.weight, self.compute_dtype)), dtype)


def sequence_parallel_norms(network: nn.Cell, layout: MeshLayout) -> Dict[str, tuple]:
    """Switch the hidden-state norms (width hidden_size, outside attention: per-head q/k norms and MLA's latent
    norms see other shapes) to `SeqParallelRMSNorm` sharded (dp, cp * mp, 1); returns {path: strategy}."""
    hidden = getattr(getattr(network, "config", None), "hidden_size", None)
    strategy = (layout.dp, layout.cp * layout.mp, 1)
    applied = {}
    for path, cell in network.cells_and_names():
        if isinstance(cell, RMSNorm) and ".self_attn." not in f".{path}." and cell.weight.shape[0] == hidden:
            # same parameters and arithmetic; construct uses the primitives (Cell.__setattr__ bypassed for __class__)
            object.__setattr__(cell, "__class__", SeqParallelRMSNorm)
            cell.shard_sequence(strategy)
            applied[path] = strategy
    return applied


def gather_optimizer_shards(cell: nn.Cell, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Undo MindSpore's parallel optimizer for a checkpoint: a parameter it splits once more along dim 0 (and the
    optimizer state `<prefix>.<name>` of it) is gathered over its optimizer-shard group, back to this rank's slice
    of the plan. Collective: every rank of a stage calls it with the same names, in the same order."""
    layouts = getattr(cell, "parameter_layout_dict", None) or {}
    out = dict(arrays)
    for key in sorted(arrays):
        layout = layouts.get(param_of(key, layouts))
        group = layout[5] if layout is not None and len(layout) > 5 else ""
        if group:
            out[key] = ops.AllGather(group=group)(ms.Tensor(arrays[key])).asnumpy()
    return out
