"""What each worker reads for one training step: how many samples, which data shard, and the global batch.

runner_config.batch_size means what it means upstream (MindSpore Transformers 2.x,
BaseTrainer._check_global_batch_size_for_auto_parallel). In data-parallel mode it is each worker's batch, times
gradient_accumulation_steps (whose micro-batches are stacked in the step's input). Under semi-auto/auto parallel
it is one data-parallel replica's micro-batch; with pipeline_stage > 1 a step reads micro_batch_num of them
(gradient_accumulation_steps > 1 is refused there: the micro-batches are the accumulation). Then:

- full_batch: True: every worker reads the whole global batch (x data_parallel) and MindSpore gives each its slice;
- otherwise the batch is split the way MindSpore splits its inputs: over dataset_strategy[0][0] ways (upstream's
  configs: data_parallel) or, with no strategy, over all devices of a stage. The shard follows the worker's place
  within its stage, so every stage reads the same samples: the last stage's labels belong to the first stage's
  inputs.
"""
from dataclasses import dataclass

from .plan import MeshLayout
from .tensor_parallel import data_parallel_rank

_SEMI_AUTO = (1, 2, "semi_auto_parallel", "auto_parallel")


@dataclass(frozen=True)
class StepBatch:
    """One training step as one worker reads it."""
    rows: int  # samples this worker's dataset yields per step
    shard: int  # the data shard it reads
    shards: int  # distinct shards per step: the global batch is rows x shards
    formula: str = ""  # under semi-auto parallel: how rows and the global batch follow from the config

    @property
    def global_batch(self) -> int:
        return self.rows * self.shards


def step_batch(config, rank_id: int, device_num: int) -> StepBatch:
    """This worker's StepBatch under the config's parallel mode (module docstring)."""
    runner = config.get("runner_config") or {}
    batch = int(runner.get("batch_size") or (config.get("train_dataset") or {}).get("batch_size") or 1)
    accum = int(runner.get("gradient_accumulation_steps") or 1)
    parallel = config.get("parallel") or {}
    if not config.get("use_parallel") or parallel.get("parallel_mode", 0) not in _SEMI_AUTO:
        return StepBatch(batch * accum, *data_parallel_rank(config, rank_id, device_num))
    layout = MeshLayout.from_config(config.get("parallel_config"))
    if layout.pp > 1:
        rows, terms = batch * layout.micro_batch_num, f"batch_size {batch} x micro_batch_num {layout.micro_batch_num}"
    else:
        rows, terms = batch * accum, f"batch_size {batch} x gradient_accumulation_steps {accum}"
    strategy = parallel.get("dataset_strategy")
    if parallel.get("full_batch") is True or strategy == "full_batch":
        return StepBatch(rows * layout.dp, 0, 1, f"every worker reads the global batch {rows * layout.dp} = {terms} "
                                                 f"x data_parallel {layout.dp} (full_batch)")
    per_stage = device_num // layout.pp
    ways = strategy[0][0] if isinstance(strategy, (list, tuple)) else per_stage
    if isinstance(ways, bool) or not isinstance(ways, int) or ways < 1 or per_stage % ways:
        raise ValueError(f"parallel.dataset_strategy {strategy!r}: its first entry's batch split must be an int "
                         f"dividing the {per_stage} devices of a stage (upstream: data_parallel, {layout.dp})")
    return StepBatch(rows, rank_id % per_stage // (per_stage // ways), ways,
                     f"each worker reads {rows} = {terms} per step; global batch {rows * ways} = {rows} x {ways} "
                     f"data shards ({'dataset_strategy' if ways != per_stage else 'one per device of a stage'})")
