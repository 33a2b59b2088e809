"""Builders of a run's components from its config: tokenizer, model (HF load, LoRA, reward head, merge), datasets,
the train step (optimizer, LR schedules, wrapper), and the callbacks the config implies."""
import inspect
import logging
import os
from typing import Optional

from ..alignment import PreferenceLoss, RewardModel, frozen_copy
from ..checkpoint import load_weights
from ..core.callback import TopkBiasBalanceCallback
from ..core.callback.monitor import norm_groups
from ..core.callback.observers import ProfileCallback, ProgressBar, TensorBoardCallback
from ..config import plain
from ..core.context import ensure_call_depth, parallel_mode_name
from ..core.lr import build_grouped_lr_schedule, build_lr_schedule
from ..core.optim import get_optimizer_grouped_parameters
from ..modules.moe import EXPERT_LOAD
from ..models.decoder import recompute_layer_count
from ..models.hf import config_from_section, from_pretrained, tokenizer_from_hf
from ..parallel import MeshLayout, ShardPlan, apply_plan
from ..parallel.batch import StepBatch, step_batch
from ..parallel.tensor_parallel import apply_tensor_parallel, tensor_parallel_size
from ..pet import apply_lora, has_lora, load_adapter, merge_lora, trainable_summary
from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType as T
from ..tools.register import build_from_config

logger = logging.getLogger("mindformers")


def build_tokenizer(config, tokenizer=None):
    """The tokenizer from `processor.tokenizer` (or the one given), else from `pretrained_model_dir`."""
    if tokenizer is not None:
        return tokenizer
    tok_cfg = (config.get("processor") or {}).get("tokenizer")
    if tok_cfg:
        return build_from_config(tok_cfg, T.TOKENIZER)
    if config.get("pretrained_model_dir"):
        return tokenizer_from_hf(config.pretrained_model_dir)
    return None


def apply_recompute_section(config, network):
    """Upstream's top-level `recompute_config` (its trainer hands it to every layer) on the built network, unless
    model_config carries its own (applied when the model was built); the two differing is an error."""
    section = plain(config.get("recompute_config") or {})
    if not recompute_layer_count(section, 1):
        return
    own = (getattr(network.config, "parallel", None) or {}).get("recompute_config")
    if own is not None:
        layers = network.config.num_layers
        if recompute_layer_count(own, layers) != recompute_layer_count(section, layers):
            raise ValueError(f"recompute_config {section} and model.model_config.recompute_config {plain(own)} "
                             f"differ; set one of them")
        return
    if not hasattr(network, "apply_recompute"):
        raise ValueError(f"recompute_config.recompute: {type(network).__name__} has no decoder layers to recompute; "
                         f"set recompute: False")
    count = network.apply_recompute(section)
    if count:
        logger.info("recompute_config: %d of %d decoder layers recompute their activations in backward", count,
                    network.config.num_layers)


def build_model(config, network=None):
    """The network from `model.model_config` + `model.arch`, with `load_checkpoint` weights if set.

    With `pretrained_model_dir` (a Hugging Face directory) the config comes from its config.json, overridden
    by the model_config keys, and the weights from its safetensors; `load_checkpoint` then loads on top.
    """
    if network is None and config.get("pretrained_model_dir"):
        model = config.get("model") or {}
        network = from_pretrained(config.pretrained_model_dir, (model.get("arch") or {}).get("type"),
                                  bool(config.get("allow_pickle_checkpoint")), **dict(model.get("model_config") or {}))
        logger.info("loaded %s from %s", type(network).__name__, config.pretrained_model_dir)
    if network is None:
        model_cfg = config.model.model_config
        if "type" not in model_cfg and model_cfg.get("model_type"):  # upstream 2.x: config.json keys inline
            model_config, model_class = config_from_section(dict(model_cfg))
            arch = ((config.get("model") or {}).get("arch") or {}).get("type")
            if arch not in (None, model_class.__name__):
                raise ValueError(f"model.arch.type {arch} does not match model_config.model_type "
                                 f"{model_cfg.get('model_type')!r} ({model_class.__name__}); remove the key or fix it")
            network = model_class(model_config)
        else:
            model_config = build_from_config(model_cfg, T.CONFIG)
            network = build_from_config(config.model.arch, T.MODELS, config=model_config)
    apply_recompute_section(config, network)
    # deep models exceed MindSpore's default call depth when compiled: the limit follows the layer count
    ensure_call_depth((getattr(network.config, "num_layers", 0) or 0)
                      + (getattr(network.config, "num_nextn_predict_layers", 0) or 0))
    pet_config = getattr(network.config, "weights", {}).get("pet_config")
    adapter_dir = (pet_config or {}).get("adapter_dir")
    # with adapter_dir the adapters' layout comes from its adapter_config.json, applied after the base weights
    if pet_config and not adapter_dir and not has_lora(network):
        paths = apply_lora(network, pet_config)
        logger.info("LoRA on %d layers (%s ...): %s", len(paths), ", ".join(paths[:3]), trainable_summary(network))
    if (config.get("preference") or {}).get("loss_type") == "reward" and not isinstance(network, RewardModel):
        network = RewardModel(network)  # before loading: a reward checkpoint holds the score head too
    lora_now = has_lora(network)
    head_now = isinstance(network, RewardModel)
    if config.get("load_checkpoint"):
        info = load_weights(network, config.load_checkpoint, strict=not (lora_now or head_now),
                            allow_pickle=bool(config.get("allow_pickle_checkpoint")),
                            expected_format=config.get("load_ckpt_format"))
        if lora_now or head_now:  # a base checkpoint lacks only the new adapters / score head
            missing = [n for n in info["missing"] if ".lora_A." not in n and ".lora_B." not in n
                       and n != "score.weight"]
            if missing or info["unexpected"]:
                raise ValueError(f"load_checkpoint {info['file']} does not fit the model: missing {missing[:8]}, "
                                 f"not in model {info['unexpected'][:8]}")
            fresh = len(info["missing"])
            logger.info("loaded weights from %s%s", info["file"],
                        f" ({fresh} LoRA adapter tensors start fresh)" if fresh else " (with its LoRA adapters)")
        else:
            logger.info("loaded weights from %s", info["file"])
    if adapter_dir:
        load_adapter(network, resolve_repo_path(adapter_dir, "pet_config.adapter_dir"))
        logger.info("loaded LoRA adapter %s", adapter_dir)
    if config.get("merge_lora"):
        if not pet_config:
            raise ValueError("merge_lora: True needs LoRA adapters: set model.model_config.pet_config")
        logger.info("merged %d LoRA adapters into the base weights", merge_lora(network))
    return network


def check_vocab(tokenizer, network):
    """A tokenizer with more ids than the model's embedding table would index past it: refuse it up front."""
    model_vocab = getattr(getattr(network, "config", None), "vocab_size", None)
    if tokenizer is not None and model_vocab and tokenizer.vocab_size > model_vocab:
        raise ValueError(f"processor.tokenizer has {tokenizer.vocab_size} ids but model_config.vocab_size is "
                         f"{model_vocab}; use the model's own tokenizer or raise vocab_size")


def preference_network(config, network):
    """The loss network for the `preference` section (DPO/IPO/SimPO or a reward model), else `network`."""
    pref = plain(config.get("preference") or {})
    if not pref:
        return network
    loss_type = pref.pop("loss_type", "dpo")
    if loss_type == "reward":
        if pref:
            raise ValueError(f"preference: loss_type reward takes no other keys, got {sorted(pref)}")
        logger.info("training a reward model (pairwise loss, score head) on %s", type(network.lm).__name__)
        return network if isinstance(network, RewardModel) else RewardModel(network)
    if loss_type != "simpo" and config.get("resume_training"):
        raise ValueError(f"preference.loss_type {loss_type}: resume_training would rebuild the reference model from "
                         f"the resumed weights instead of the starting ones; restart from load_checkpoint instead")
    reference = None if loss_type == "simpo" else frozen_copy(network, lambda: type(network)(network.config))
    logger.info("preference optimisation: %s, %s", loss_type, pref)
    return PreferenceLoss(network, reference, loss_type, **pref)


def apply_parallel_layout(config, network, env):
    """Apply parallel_config's layout to the built network: in data-parallel mode with model_parallel > 1, cut it
    into this rank's tensor-parallel part (explicit collectives, runs on CPU); under semi-auto/auto parallel
    (Ascend), set the shard strategies of the plan."""
    if not config.get("use_parallel"):
        return
    if parallel_mode_name(config) == "data_parallel":
        if tensor_parallel_size(config) > 1:
            if config.get("preference"):
                raise ValueError("parallel_config.model_parallel > 1 does not run with a `preference` section yet "
                                 "(its reference model would be whole); set model_parallel: 1")
            layout = MeshLayout.from_config(config.get("parallel_config"), env["device_num"])  # dp x mp = workers
            if (config.get("parallel_config") or {}).get("vocab_emb_dp") is True:
                logger.info("parallel_config.vocab_emb_dp: True has no effect in tensor parallel (parallel_mode 0): "
                            "the embedding rows are split over model_parallel with the lm_head (same results, less "
                            "memory)")
            apply_tensor_parallel(network, layout, env["rank_id"])
        return

    plan = ShardPlan.for_network(network, MeshLayout.from_config(config.get("parallel_config"), env["device_num"]))
    apply_plan(network, plan)
    logger.info("shard plan:\n%s", plan.describe())


def check_columns_fit(dataset, network):
    """A dataset whose columns the network's construct cannot take fails here, naming both, not in the graph."""
    columns = dataset.get_col_names()
    params = [p for p in inspect.signature(network.construct).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(network.construct).parameters.values()):
        return
    if len(columns) > len(params):
        raise ValueError(f"train_dataset gives the columns {columns} but {type(network).__name__}.construct takes "
                         f"({', '.join(p.name for p in params)}); e.g. eod_reset or packing need a model that "
                         f"takes position_ids")


def build_dataset(config, split: str, tokenizer, seq_length: int, batch_size: int, env: dict, skip_samples: int = 0,
                  vocab_size: Optional[int] = None):
    """The `<split>_dataset` batches: the task named by `<split>_dataset_task` over the `<split>_dataset` section."""
    task = dict(config.get(f"{split}_dataset_task") or {"type": "CausalLanguageModelDataset"})
    # upstream's rule at the point of use: the task's dataset_config is <split>_dataset when that is set
    dataset_config = dict(config.get(f"{split}_dataset") or task.get("dataset_config") or {})
    if not dataset_config:
        raise ValueError(f"{split}_dataset is not set in the config")
    dataset_config["batch_size"] = batch_size
    task["dataset_config"] = dataset_config
    shard = step_batch(config, env["rank_id"], env["device_num"])
    return build_from_config(task, T.DATASET, tokenizer=tokenizer, seq_length=seq_length,
                             rank_id=shard.shard, device_num=shard.shards,
                             seed=int(config.get("seed") or 0), skip_samples=skip_samples,
                             vocab_size=vocab_size)


def train_batch(config, env: dict) -> StepBatch:
    """What each training step reads (parallel/batch.py); under semi-auto parallel, where batch_size is one
    micro-batch per data-parallel replica as upstream, the per-step and global batch are logged."""
    batch = step_batch(config, env["rank_id"], env["device_num"])
    if batch.formula:
        logger.info("runner_config.batch_size under semi-auto parallel: %s", batch.formula)
    return batch


def build_train_step(config, network, planned_steps: int, accum: int, batch: Optional[StepBatch] = None):
    """(train step, LR schedule, monitor groups): the optimizer, with its LR schedule over the planned steps,
    wrapped in the runner_wrapper cell; the parameter-norm groups of monitor_config (None when it is off)."""
    # lr_scale: workers = distinct data shards (one tensor-parallel group trains one copy on one batch); per-worker
    # batch = one forward pass's samples (all micro-batches under pipeline parallel), accumulation not counted
    workers, per_worker = (batch.shards, batch.rows // accum) if batch is not None else (1, None)
    lr, params = schedules_and_groups(config, network, planned_steps, workers, per_worker)
    opt_cfg = dict(config.optimizer)
    opt_cfg.pop("swap", None)  # upstream's key; the config check refuses any value but False
    optimizer = build_from_config(opt_cfg, T.OPTIMIZER, params=params, learning_rate=lr)
    network.set_train(True)
    wrapper_cfg = dict(config.get("runner_wrapper") or {"type": "MFTrainOneStepCell"})
    plan = getattr(network, "shard_plan", None)  # semi-auto parallel (parallel/apply.py)
    if plan is not None and plan.layout.pp > 1 and wrapper_cfg.get("type") in ("MFTrainOneStepCell", None):
        wrapper_cfg["type"] = "MFPipelineWithLossScaleCell"  # pipeline parallel trains through upstream's cell
    if plan is not None and wrapper_cfg.get("type") == "MFPipelineWithLossScaleCell":
        wrapper_cfg.setdefault("micro_batch_num", plan.layout.micro_batch_num)
    extra, groups = {}, None
    monitor = plain(config.get("monitor_config") or {})
    if monitor.get("monitor_on"):
        names = [p.name for p in optimizer.parameters]
        groups, extra["norm_groups"] = norm_groups(names, monitor.get("target"), monitor.get("invert", False))
    if getattr(network, "tensor_parallel", None) is not None:  # gradients reduce over its dp group only
        extra["tensor_parallel"] = network.tensor_parallel
    train_step = build_from_config(wrapper_cfg, T.WRAPPER, network=network, optimizer=optimizer,
                                   gradient_accumulation_steps=accum, **extra)
    train_step.set_train(True)
    return train_step, lr, groups


def scaled_learning_rate(config, section: dict, device_num: int, per_worker: Optional[int] = None) -> dict:
    """Upstream's lr_scale on a schedule section: its rate (learning_rate, or base_lr) x workers x per-worker
    batch (runner_config.batch_size unless given) / lr_scale_factor (default 256)."""
    if not config.get("lr_scale"):
        return section
    key = "learning_rate" if "learning_rate" in section else "base_lr"
    factor = config.get("lr_scale_factor") or 256
    per_worker = per_worker or int((config.get("runner_config") or {}).get("batch_size") or 1)
    scaled = float(section[key]) * device_num * per_worker / factor
    logger.info("lr_scale: %s %g -> %g (x %d workers x batch %d / %s)", key, float(section[key]), scaled,
                device_num, per_worker, factor)
    return {**section, key: scaled}


def schedules_and_groups(config, network, planned_steps: int, device_num: int, per_worker: Optional[int] = None):
    """The run's LR schedule (the logged one) and the optimizer's parameter groups: weight-decay groups, each
    split by `grouped_lr_schedule` (a group with its own schedule carries it as "lr")."""
    grouped = plain(config.get("grouped_lr_schedule") or {})
    if grouped and config.get("lr_schedule"):
        raise ValueError("grouped_lr_schedule replaces lr_schedule (its `default` is the schedule); set only one")
    params = get_optimizer_grouped_parameters(network, (config.optimizer or {}).get("weight_decay", 0.0) or 0.0)
    if not grouped:
        return build_lr_schedule(scaled_learning_rate(config, dict(config.lr_schedule), device_num, per_worker),
                                 planned_steps), params
    grouped["default"] = scaled_learning_rate(config, grouped.get("default") or {}, device_num, per_worker)
    grouped["grouped"] = [scaled_learning_rate(config, g, device_num, per_worker)
                          for g in grouped.get("grouped") or []]
    lr, lr_groups = build_grouped_lr_schedule(grouped, [p.name for p in network.trainable_params()], planned_steps)
    owner = {name: schedule for names, schedule in lr_groups for name in names}
    split = []
    for group in params:  # each weight-decay group split by schedule; groups without "lr" follow the default
        buckets = {}
        for p in group["params"]:
            schedule = owner.get(p.name)
            buckets.setdefault(id(schedule), (schedule, []))[1].append(p)
        split += [{**group, "params": ps, **({"lr": sch} if sch is not None else {})} for sch, ps in buckets.values()]
    return lr, split


def balance_callback(network, callbacks) -> list:
    """TopkBiasBalanceCallback when the model's routers count expert loads for a bias update and the YAML did
    not list it: without it the update rate would be set and nothing would update."""
    counting = any(hasattr(cell, EXPERT_LOAD) for _, cell in network.cells_and_names())
    if not counting or any(isinstance(c, TopkBiasBalanceCallback) for c in callbacks):
        return []
    logger.info("expert_bias_update_rate > 0: added TopkBiasBalanceCallback (updates e_score_correction_bias "
                "after every step)")
    return [TopkBiasBalanceCallback()]


def observers(config, env: dict, output_dir: str) -> list:
    """Profiler (`profile*` keys), TensorBoard (`tensorboard`) and, on a terminal, a progress bar."""
    rank_id = env["rank_id"]
    out = []
    if config.get("profile"):
        keys = ("profile_start_step", "profile_stop_step", "profile_rank_ids", "init_start_profile",
                "profile_memory", "profile_communication", "profile_pipeline", "profiler_level")
        given = {k: config.get(k) for k in keys if config.get(k) is not None}
        path = config.get("profile_output") or os.path.join(output_dir, "profile")
        out.append(ProfileCallback(path, **given, rank_id=rank_id,
                                   device_target=env["device_target"]))
    board = plain(config.get("tensorboard") or {})
    if board.get("tensorboard_dir"):
        out.append(TensorBoardCallback(**board, rank_id=rank_id))
    if rank_id == 0:
        out.append(ProgressBar())
    return out
