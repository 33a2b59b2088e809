"""Parallel layouts: mesh from parallel_config, per-parameter shard plans, MindSpore shard strategies, and tensor
parallel on explicit collectives (data-parallel mode, runs on CPU)."""
from .apply import apply_plan, build_shapes_only, plan_from_config
from .plan import MeshLayout, ParamPlan, ShardPlan
from .tensor_parallel import apply_tensor_parallel
from .tensor_parallel_cells import TensorParallel

__all__ = ["MeshLayout", "ParamPlan", "ShardPlan", "TensorParallel", "apply_plan", "apply_tensor_parallel",
           "build_shapes_only", "plan_from_config"]
