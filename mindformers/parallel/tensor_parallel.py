"""Tensor (model) parallelism on explicit collectives, Megatron-LM style, for data-parallel mode under msrun.

MindSpore's semi-auto parallel inserts the communication itself but runs only on Ascend ("Invalid backend: CPU").
Measured on CPU with MindSpore 2.10 and msrun: AllReduce runs in created groups, AllGather only in the world
group ("AllGather only support mccl_world_group on CPU"), and ReduceScatter, AlltoAll and send/recv have no CPU
kernels, which also rules out the automatic gradient of AllGather (a ReduceScatter). So every collective here
is an AllReduce inside a cell whose backward (`bprop`) is written out (Megatron's f and g operators):

- `CopyToModelParallel` (f): identity forward, AllReduce of the gradient backward. Before a column-parallel
  matmul: every rank holds the whole input, and its gradient is the sum of every rank's part.
- `ReduceFromModelParallel` (g): AllReduce forward, identity backward. After a row-parallel matmul and after
  the vocabulary-parallel embedding lookup.
- `GatherFromModelParallel`: the slices of all ranks concatenated on the last axis, as an AllReduce of this
  rank's slice placed in zeros (exact: x + 0 = x); backward keeps this rank's part of the gradient. Only
  inference and evaluation gather the logits.
- `VocabParallelNLL`: the cross-entropy of logits split over the vocabulary (Megatron's vocab-parallel loss):
  the row max, the sum of exponentials and the target's logit are all-reduced, never the logits.

`apply_tensor_parallel` turns a built model into this rank's part: in every `CausalSelfAttention` with plain
`Linear` projections, q/k/v become column-parallel (heads split over mp) and o row-parallel; in every dense
`SwiGLU`, gate/up column-parallel and down row-parallel; the embedding table's rows and the lm_head's outputs
(tied: the same table rows) are split over the vocabulary and the training loss is vocabulary-parallel. A
vocabulary that mp does not divide is padded with zero rows at its end (never looked up, never scored).
Everything else (norms, routers, MoE experts, LoRA-wrapped or fused projections) stays replicated: it sees
whole activations on every rank, so it computes the same values and gets the same gradients there.
Ranks form a dp x mp grid, mp fastest (rank = d * mp + m, as in plan.py); data-parallel gradients are averaged
in the dp group only. Checkpoints hold whole tensors: `full_state` gathers the slices, `local_state` cuts them.
"""
import logging
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..modules.attention import CausalSelfAttention
from ..modules.layers import Embedding, Linear, SwiGLU
from .plan import MeshLayout
from .tensor_parallel_cells import (COLUMN, ROW, ColumnParallelLinear, RowParallelLinear,
                                    TensorParallel, VocabParallelCrossEntropy, VocabParallelEmbedding,
                                    VocabParallelHeadMatMul, ceil_div)

logger = logging.getLogger("mindformers")


def _plain(cell, cls) -> bool:
    return type(cell) is cls  # pylint: disable=unidiomatic-typecheck  (LoRA and other subclasses stay whole)


def _plain_linear(cell) -> bool:
    return _plain(cell, Linear)


def _set_split_param(tp: TensorParallel, cell: nn.Cell, attr: str, param: Parameter, dim: Optional[int]):
    """Give `cell.attr` this rank's part of `param` along `dim` (None: whole), under the parameter's full name."""
    value = param.asnumpy()
    if dim is not None:
        value = tp.cut(value, dim)
        tp.split[param.name], tp.full_shapes[param.name] = dim, tuple(param.shape)
    setattr(cell, attr, Parameter(Tensor(value), name=param.name, requires_grad=param.requires_grad))
    getattr(cell, attr).name = param.name  # assigning prefixes only the attribute name: keep the full one


def _swap(tp: TensorParallel, owner: nn.Cell, path: str, attr: str, kind: int, gather_output: bool = False,
          pad: bool = False):
    """Replace `owner.attr` (a Linear at `path`) by its column/row-parallel slice holding this rank's weights;
    `pad`: a column-parallel output size mp does not divide is padded (the vocabulary)."""
    old = getattr(owner, attr)
    features = old.out_features if kind == COLUMN else old.in_features
    if features % tp.mp and not pad:
        raise ValueError(f"parallel_config.model_parallel ({tp.mp}) must divide the {features} "
                         f"{'output' if kind == COLUMN else 'input'} features of {path}")
    new = ColumnParallelLinear(old, tp, gather_output) if kind == COLUMN else RowParallelLinear(old, tp)
    setattr(owner, attr, new)
    for local, param in (("weight", old.weight), ("bias", old.bias)):
        if param is not None:
            # a column-parallel bias is split with the outputs; a row-parallel one is added after the reduce: whole
            _set_split_param(tp, new, local, param, kind if local == "weight" else (0 if kind == COLUMN else None))
    return new


def _check_vocabulary(tp: TensorParallel, vocab: int) -> int:
    if ceil_div(vocab, tp.mp) * (tp.mp - 1) >= vocab:  # some rank would hold padding only
        raise ValueError(f"parallel_config.model_parallel ({tp.mp}) is too large for a vocabulary of {vocab}")
    return vocab


def _split_vocabulary(tp: TensorParallel, network: nn.Cell) -> str:
    """Split the embedding table's rows and the lm_head's outputs over mp, and put the vocabulary-parallel loss in
    place of the model's `lm_loss` (then no rank holds whole logits in training). What was split, for the log."""
    decoder = getattr(network, "model", None)
    embed = getattr(decoder, "embed_tokens", None)
    tied = bool(getattr(network, "tie_word_embeddings", False))
    head, vocab, parts = None, None, []
    # a tied head reads the table through head_matmul: split the table only if that matmul can be replaced
    if _plain(embed, Embedding) and (not tied or isinstance(getattr(network, "head_matmul", None), ops.MatMul)):
        vocab = _check_vocabulary(tp, embed.weight.shape[0])
        new = VocabParallelEmbedding(embed, tp)
        decoder.embed_tokens = new
        _set_split_param(tp, new, "weight", embed.weight, 0)
        parts.append("embedding")
        if tied:
            head = network.head_matmul = VocabParallelHeadMatMul(tp, vocab)
            parts.append("tied lm_head")
    if not tied and _plain_linear(getattr(network, "lm_head", None)):
        vocab = _check_vocabulary(tp, network.lm_head.out_features)
        head = _swap(tp, network, "lm_head", "lm_head", COLUMN, gather_output=True, pad=True)
        parts.append("lm_head")
    loss = getattr(network, "lm_loss", None)
    if head is not None and isinstance(loss, nn.Cell) and hasattr(loss, "ignore_index"):
        network.lm_loss = VocabParallelCrossEntropy(tp, vocab, loss.ignore_index)
        head.gather_in_training = False
        parts.append("loss")
    if not parts:
        return ""
    padded = ceil_div(vocab, tp.mp) * tp.mp
    return f"the vocabulary ({vocab}{f', padded to {padded}' if padded != vocab else ''}: {', '.join(parts)})"


def apply_tensor_parallel(network: nn.Cell, layout: MeshLayout, rank: int,
                          create_groups: bool = True) -> TensorParallel:
    """Cut a built model (full weights, e.g. just loaded) into this rank's tensor-parallel part, in place; the
    `TensorParallel` it returns is also set as `network.tensor_parallel` (the checkpoint hooks read it there)."""
    if layout.pp > 1 or layout.cp > 1:
        raise ValueError("tensor parallel in data-parallel mode combines only data_parallel and model_parallel; "
                         "set pipeline_stage and context_parallel to 1")
    tp = TensorParallel(layout.dp, layout.mp, rank)
    if create_groups:
        tp.create_groups()
    attentions = mlps = 0
    for path, cell in list(network.cells_and_names()):
        if isinstance(cell, CausalSelfAttention):
            projections = ("q_proj", "k_proj", "v_proj", "o_proj")
            if not all(_plain_linear(getattr(cell, p)) for p in projections):
                continue
            if cell.n_kv_heads % tp.mp:
                raise ValueError(f"parallel_config.model_parallel ({tp.mp}) must divide the {cell.n_kv_heads} "
                                 f"key/value heads of {path}")
            for attr in projections:
                _swap(tp, cell, f"{path}.{attr}", attr, ROW if attr == "o_proj" else COLUMN)
            cell.n_heads //= tp.mp  # the attention now sees only this rank's heads (n_rep is unchanged)
            cell.n_kv_heads //= tp.mp
            attentions += 1
        elif isinstance(cell, SwiGLU) and ".experts." not in f".{path}." and \
                all(_plain_linear(getattr(cell, p)) for p in ("gate_proj", "up_proj", "down_proj")):
            for attr in ("gate_proj", "up_proj", "down_proj"):
                _swap(tp, cell, f"{path}.{attr}", attr, ROW if attr == "down_proj" else COLUMN)
            mlps += 1
    vocabulary = _split_vocabulary(tp, network)
    if not tp.split:
        raise ValueError(f"parallel_config.model_parallel ({tp.mp}): {type(network).__name__} has no attention, "
                         f"feed-forward block or embedding this tensor-parallel path splits (plain Linear "
                         f"projections, a plain Embedding)")
    network.tensor_parallel = tp
    logger.info("tensor parallel: dp %d x mp %d, rank %d holds mp slice %d: %d attention and %d feed-forward blocks"
                "%s split", tp.dp, tp.mp, rank, tp.mp_rank, attentions, mlps,
                f" and {vocabulary}" if vocabulary else "")
    return tp


def tensor_parallel_size(config) -> int:
    """parallel_config.model_parallel when it runs as explicit tensor parallel (use_parallel, data-parallel
    mode), else 1."""
    mode = (config.get("parallel") or {}).get("parallel_mode", 0)
    if not config.get("use_parallel") or mode not in (0, "data_parallel", None):
        return 1
    return MeshLayout.from_config(config.get("parallel_config"), None).mp


def data_parallel_rank(config, rank_id: int, device_num: int):
    """(index, count) of this worker's data shard: ranks of one mp group read the same batches."""
    mp = tensor_parallel_size(config)
    return rank_id // mp, device_num // mp


def gradient_reducer(weights, tp: TensorParallel, mean: bool):
    """Data-parallel gradient averaging (or summing) over the dp group only; identity when dp is 1."""
    if tp.dp == 1:
        return ops.identity
    # degree: DistributedGradReducer divides by the world size unless told the group's (measured: 4 workers, dp 2)
    return nn.DistributedGradReducer(weights, mean, degree=tp.dp, group=tp.dp_group)


def split_mask(weights, tp: TensorParallel) -> Tensor:
    """1 for each weight split over mp, else 0 (their squared gradient norms are summed over the mp group)."""
    return Tensor(np.array([1.0 if w.name in tp.split else 0.0 for w in weights], np.float32), ms.float32)
