"""Parallel layouts: mesh from parallel_config, per-parameter shard plans, MindSpore shard strategies."""
from .apply import apply_plan, build_shapes_only, plan_from_config
from .plan import MeshLayout, ParamPlan, ShardPlan

__all__ = ["MeshLayout", "ParamPlan", "ShardPlan", "apply_plan", "build_shapes_only", "plan_from_config"]
