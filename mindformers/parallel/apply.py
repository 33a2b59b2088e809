"""From a config to a shard plan, and from a plan to MindSpore shard strategies (semi-auto parallel).

`plan_from_config` builds the model with uninitialised parameters (no weight memory, an 8B model in well
under a second) only to read names and shapes. `apply_plan` sets `Primitive.shard` strategies and
`Cell.pipeline_stage` on a built network; MindSpore's semi-auto parallel compiler then inserts the
communication. Running that compiled graph needs Ascend devices (MindSpore 2.10 on CPU runs only data
parallel and refuses dry runs), so on CPU the plan is built and checked, and the run stops in
`core/context.py` with a message naming the device.
"""
from typing import Dict, Optional

from mindspore import nn, ops

from ..modules.attention import CausalSelfAttention
from ..modules.layers import Embedding, Linear
from .plan import MeshLayout, ShardPlan
from .semi_auto import sequence_parallel_norms, set_stages


def build_shapes_only(config):
    """The network of `config.model` with parameters left uninitialised (names and shapes only)."""
    from mindspore.nn.utils import no_init_parameters

    from ..tools.register import MindFormerModuleType as T
    from ..tools.register import build_from_config

    model_cfg = dict(config.model.model_config)
    for key in ("compute_dtype", "param_init_type", "embedding_init_type", "layernorm_compute_type",
                "softmax_compute_type", "rotary_dtype"):
        if key in model_cfg:
            model_cfg[key] = "float32"  # dtypes don't change shapes; bf16 would be refused on CPU
    with no_init_parameters():
        model_config = build_from_config(model_cfg, T.CONFIG)
        return build_from_config(config.model.arch, T.MODELS, config=model_config)


def plan_from_config(config, device_num: Optional[int] = None) -> ShardPlan:
    """The shard plan `config.parallel_config` gives `config.model` on `device_num` devices."""
    layout = MeshLayout.from_config(config.get("parallel_config"), device_num)
    return ShardPlan.for_network(build_shapes_only(config), layout)


def apply_plan(network: nn.Cell, plan: ShardPlan) -> Dict[str, tuple]:
    """Set shard strategies and pipeline stages on `network`; returns {cell path: strategy} as applied.

    Token rows of activations are split over dp x cp (batch and sequence folded into rows, as the Linear
    layers see them); projection weights as the plan says; attention scores per (batch, head) over (dp, mp);
    MoE experts over ep, their tokens over the rest of dp. With use_seq_parallel the hidden-state norms run on
    tokens split over mp too, and row-parallel outputs are reduce-scattered to that layout. The plan is kept as
    `network.shard_plan` (the train step and the checkpoint callback read it).
    """
    lay = plan.layout
    rows = lay.dp * lay.cp
    applied = {}
    for path, cell in network.cells_and_names():
        if isinstance(cell, Linear):
            weight = plan.params.get(f"{path}.weight")
            if weight is None:
                continue
            out_strategy = None
            if weight.split[0] == "mp":      # column parallel: output features split
                strategy = ((rows, 1), (lay.mp, 1))
            elif weight.split[1] == "mp":    # row parallel: contraction split, partial sums all-reduced
                strategy = ((rows, lay.mp), (1, lay.mp))
                if lay.use_seq_parallel:     # ... or reduce-scattered over the tokens (sequence parallel)
                    out_strategy = ((rows * lay.mp, 1),)
            else:
                strategy = ((rows, 1), (1, 1))
            if out_strategy is None and "out_strategy" in cell.matmul.attrs:  # a plan applied again
                cell.matmul.del_prim_attr("out_strategy")
            cell.matmul.shard(strategy, out_strategy)
            applied[path] = strategy if out_strategy is None else (strategy, out_strategy)
        elif isinstance(cell, Embedding):
            weight = plan.params.get(f"{path}.weight")
            if weight is None:
                continue
            # table (vocab, hidden) by rows over mp when vocab_emb_dp is False, else whole; ids (B, T) over dp, cp
            strategy = ((lay.mp if weight.split[0] == "mp" else 1, 1), (lay.dp, lay.cp))
            cell.gather.shard(strategy)
            applied[path] = strategy
        elif isinstance(cell, CausalSelfAttention):
            strategy = ((lay.dp, lay.mp, lay.cp, 1), (lay.dp, lay.mp, 1, 1))
            cell.scores.shard(strategy)
            cell.weighted_sum.shard(strategy)
            applied[path] = strategy
        elif isinstance(getattr(cell, "bmm", None), ops.BatchMatMul) and hasattr(cell, "experts"):
            # every expert runs as one BatchMatMul over stacked (E, out, in) weights (modules/moe.py): experts
            # over ep, tokens over the remaining dp / ep (and cp); one primitive serves the gate, up and down
            # products, so the expert width is not split over mp (the plan keeps experts whole over mp)
            strategy = ((lay.ep, lay.dp // lay.ep * lay.cp, 1), (lay.ep, 1, 1))
            cell.bmm.shard(strategy)
            applied[f"{path}.bmm"] = strategy
    if lay.use_seq_parallel:
        applied.update({f"{path}.sequence": s for path, s in sequence_parallel_norms(network, lay).items()})
    if lay.pp > 1:
        applied.update({f"{path}.pipeline_stage" if path else "pipeline_stage": stage
                        for path, stage in set_stages(network, plan).items()})
    network.shard_plan = plan
    return applied
