"""CausalLanguageModelingTrainer: builds every component from a config and runs train/finetune/eval/predict."""
import copy
import inspect
import json
import logging
import os
import signal
import threading
from typing import List, Optional

import numpy as np

from mindspore.train import Callback

from ..alignment import RewardModel
from ..checkpoint import find_resume_checkpoint, load_train_state, load_weights, read_state
from ..core.callback import CallbackParams
from ..core.context import build_context
from ..evaluation.scoring import score_dataset
from ..pet import has_lora
from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister, build_from_config

logger = logging.getLogger("mindformers")


def build_tokenizer(config, tokenizer=None):
    """The tokenizer from `processor.tokenizer` (or the one given), else from `pretrained_model_dir`."""
    if tokenizer is not None:
        return tokenizer
    tok_cfg = (config.get("processor") or {}).get("tokenizer")
    if tok_cfg:
        return build_from_config(tok_cfg, T.TOKENIZER)
    if config.get("pretrained_model_dir"):
        from ..models.hf import tokenizer_from_hf
        return tokenizer_from_hf(config.pretrained_model_dir)
    return None


def build_model(config, network=None):
    """The network from `model.model_config` + `model.arch`, with `load_checkpoint` weights if set.

    With `pretrained_model_dir` (a Hugging Face directory) the config comes from its config.json, overridden
    by the model_config keys, and the weights from its safetensors; `load_checkpoint` then loads on top.
    """
    if network is None and config.get("pretrained_model_dir"):
        from ..models.hf import from_pretrained
        model = config.get("model") or {}
        network = from_pretrained(config.pretrained_model_dir, (model.get("arch") or {}).get("type"),
                                  bool(config.get("allow_pickle_checkpoint")), **dict(model.get("model_config") or {}))
        logger.info("loaded %s from %s", type(network).__name__, config.pretrained_model_dir)
    if network is None:
        model_cfg = config.model.model_config
        if "type" not in model_cfg and model_cfg.get("model_type"):  # upstream 2.x: config.json keys inline
            from ..models.hf import config_from_section
            model_config, model_class = config_from_section(dict(model_cfg))
            arch = ((config.get("model") or {}).get("arch") or {}).get("type")
            if arch not in (None, model_class.__name__):
                raise ValueError(f"model.arch.type {arch} does not match model_config.model_type "
                                 f"{model_cfg.get('model_type')!r} ({model_class.__name__}); remove the key or fix it")
            network = model_class(model_config)
        else:
            model_config = build_from_config(model_cfg, T.CONFIG)
            network = build_from_config(config.model.arch, T.MODELS, config=model_config)
    pet_config = getattr(network.config, "pet_config", None)
    adapter_dir = (pet_config or {}).get("adapter_dir")
    # with adapter_dir the adapters' layout comes from its adapter_config.json, applied after the base weights
    if pet_config and not adapter_dir and not has_lora(network):
        from ..pet import apply_lora, trainable_summary
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
        from ..pet import load_adapter
        load_adapter(network, resolve_repo_path(adapter_dir, "pet_config.adapter_dir"))
        logger.info("loaded LoRA adapter %s", adapter_dir)
    if config.get("merge_lora"):
        if not pet_config:
            raise ValueError("merge_lora: True needs LoRA adapters: set model.model_config.pet_config")
        from ..pet import merge_lora
        logger.info("merged %d LoRA adapters into the base weights", merge_lora(network))
    return network


class TrainingStopped(RuntimeError):
    """Training stopped on purpose before its last step (e.g. non-finite loss with check_for_nan...)."""


def _preference_network(config, network):
    """The loss network for the `preference` section (DPO/IPO/SimPO or a reward model), else `network`."""
    pref = _plain(config.get("preference") or {})
    if not pref:
        return network
    from ..alignment import PreferenceLoss, frozen_copy
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


def _observers(config, env: dict, output_dir: str) -> list:
    """Profiler (`profile*` keys), TensorBoard (`tensorboard`) and, on a terminal, a progress bar."""
    from ..core.callback.observers import ProfileCallback, ProgressBar, TensorBoardCallback

    rank_id = env["rank_id"]
    out = []
    if config.get("profile"):
        keys = ("profile_start_step", "profile_stop_step", "profile_rank_ids", "init_start_profile",
                "profile_memory", "profile_communication", "profile_pipeline", "profiler_level")
        given = {k: config.get(k) for k in keys if config.get(k) is not None}
        path = config.get("profile_output") or os.path.join(output_dir, "profile")
        out.append(ProfileCallback(path, **given, rank_id=rank_id,
                                   device_target=env["device_target"]))
    board = _plain(config.get("tensorboard") or {})
    if board.get("tensorboard_dir"):
        out.append(TensorBoardCallback(**board, rank_id=rank_id))
    if rank_id == 0:
        out.append(ProgressBar())
    return out


def scaled_learning_rate(config, section: dict, device_num: int) -> dict:
    """Upstream's lr_scale on a schedule section: its rate (learning_rate, or base_lr) x workers x per-worker
    batch / lr_scale_factor (default 256)."""
    if not config.get("lr_scale"):
        return section
    key = "learning_rate" if "learning_rate" in section else "base_lr"
    factor = config.get("lr_scale_factor") or 256
    per_worker = int((config.get("runner_config") or {}).get("batch_size") or 1)
    scaled = float(section[key]) * device_num * per_worker / factor
    logger.info("lr_scale: %s %g -> %g (x %d workers x batch %d / %s)", key, float(section[key]), scaled,
                device_num, per_worker, factor)
    return {**section, key: scaled}


def _schedules_and_groups(config, network, planned_steps: int, device_num: int):
    """The run's LR schedule (the logged one) and the optimizer's parameter groups: weight-decay groups, each
    split by `grouped_lr_schedule` (a group with its own schedule carries it as "lr")."""
    from ..core.lr import build_grouped_lr_schedule, build_lr_schedule
    from ..core.optim import get_optimizer_grouped_parameters

    grouped = _plain(config.get("grouped_lr_schedule") or {})
    if grouped and config.get("lr_schedule"):
        raise ValueError("grouped_lr_schedule replaces lr_schedule (its `default` is the schedule); set only one")
    params = get_optimizer_grouped_parameters(network, (config.optimizer or {}).get("weight_decay", 0.0) or 0.0)
    if not grouped:
        return build_lr_schedule(scaled_learning_rate(config, dict(config.lr_schedule), device_num),
                                 planned_steps), params
    grouped["default"] = scaled_learning_rate(config, grouped.get("default") or {}, device_num)
    grouped["grouped"] = [scaled_learning_rate(config, g, device_num) for g in grouped.get("grouped") or []]
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


def _balance_callback(network, callbacks) -> list:
    """TopkBiasBalanceCallback when the model's routers count expert loads for a bias update and the YAML did
    not list it: without it the update rate would be set and nothing would update."""
    from ..core.callback import TopkBiasBalanceCallback
    from ..models.base import EXPERT_LOAD

    counting = any(hasattr(cell, EXPERT_LOAD) for _, cell in network.cells_and_names())
    if not counting or any(isinstance(c, TopkBiasBalanceCallback) for c in callbacks):
        return []
    logger.info("expert_bias_update_rate > 0: added TopkBiasBalanceCallback (updates e_score_correction_bias "
                "after every step)")
    return [TopkBiasBalanceCallback()]


def _model_label(model_name: Optional[str], network) -> str:
    """The network's class, with trainer.model_name (upstream's label for the run's model) when set."""
    return f"{model_name} ({type(network).__name__})" if model_name else type(network).__name__


def _data_skip_steps(config, start_step: int) -> int:
    """Steps of data to skip on resume: the resumed step (exact continuation), none with ignore_data_skip, or
    data_skip_steps (upstream's keys)."""
    if config.get("ignore_data_skip"):
        return 0
    skip = config.get("data_skip_steps")
    if skip is None:
        return start_step
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"data_skip_steps: {skip!r} must be an int >= 0")
    return skip


def _eval_batch_size(config) -> int:
    return int((config.get("eval_dataset") or {}).get("batch_size")
               or (config.get("runner_config") or {}).get("batch_size") or 1)


def _endless(iterator):
    """Batches from a MindSpore iterator across its epochs (each pass ends with StopIteration)."""
    while True:
        yield from iterator


def _param_count(network) -> int:
    return int(sum(np.prod(p.shape) for p in network.get_parameters()))


@MindFormerRegister.register(T.TRAINER)
class CausalLanguageModelingTrainer:
    """Trainer for decoder-only language models (upstream name)."""

    def __init__(self, model_name: Optional[str] = None):
        self.model_name = model_name

    # ---------------------------------------------------------------- train / finetune
    def train(self, config, network=None, tokenizer=None, dataset=None, callbacks=None, is_finetune=False):
        """Run the training loop described by `config`; return the list of per-step records."""

        if is_finetune and not (config.get("load_checkpoint") or config.get("pretrained_model_dir")
                                or network is not None):
            raise ValueError("run_mode finetune needs weights to start from: set load_checkpoint "
                             "(or pretrained_model_dir)")
        if config.get("merge_lora"):
            raise ValueError("merge_lora: True applies to eval and predict (it folds trained adapters into the base "
                             "weights); remove it for training")
        env = build_context(config)
        output_dir = os.path.abspath(config.get("output_dir") or "./output")
        os.makedirs(output_dir, exist_ok=True)
        runner = config.get("runner_config") or {}
        accum = int(runner.get("gradient_accumulation_steps") or 1)
        batch_size = int(runner.get("batch_size") or config.train_dataset.get("batch_size") or 1)
        epochs = int(runner.get("epochs") or 1)

        resume_dir = None
        if config.get("resume_training"):
            resume_dir = find_resume_checkpoint(config.get("load_checkpoint"), config.resume_training,
                                                by_time=bool(config.get("resume_by_last_timestamp_ckpt")))
            config = copy.deepcopy(config)
            config.load_checkpoint = resume_dir
        tokenizer = build_tokenizer(config, tokenizer)
        network = build_model(config, network)
        _check_vocab(tokenizer, network)
        _shard_for_semi_auto_parallel(config, network, env)
        model_config = network.config
        seq_length = int(model_config.seq_length)
        start_step = 0
        if resume_dir:
            state = read_state(resume_dir)
            start_step = int(state["step"])
            if state.get("config_hash") and state["config_hash"] != config.hash("model"):
                changes = _dict_diff(state.get("model") or {}, _plain(config.get("model") or {}), "model")
                logger.warning("resuming from %s, saved with a different model config%s", resume_dir,
                               f": {'; '.join(changes[:10])}" if changes else "")
        global_batch = batch_size * accum
        if dataset is None:
            dataset = self._build_dataset(config, "train", tokenizer, seq_length, global_batch, env,
                                          skip_samples=_data_skip_steps(config, start_step) * global_batch,
                                          vocab_size=getattr(model_config, "vocab_size", None))
        steps_per_epoch = dataset.get_dataset_size()
        if steps_per_epoch == 0:
            raise ValueError(f"train_dataset: fewer samples than one global batch ({global_batch}); "
                             f"lower runner_config.batch_size or add data")
        planned_steps = steps_per_epoch * epochs
        # stop_step ends the run early but leaves the LR schedule spanning the planned run, so a run
        # stopped at N and resumed matches one that never stopped
        stop_step = int(runner.get("stop_step") or 0)
        total_steps = min(planned_steps, stop_step) if stop_step else planned_steps
        if start_step >= total_steps:
            raise ValueError(f"resume: {resume_dir} is at step {start_step}, the run ends at step {total_steps}; "
                             f"raise runner_config.epochs or stop_step to train further")

        step_network = _preference_network(config, network)  # a reward model is the network itself
        _check_columns_fit(dataset, step_network)
        train_step, lr = self._build_train_step(config, step_network, planned_steps, accum, env["device_num"])
        if resume_dir:
            load_train_state(train_step, resume_dir, network)
            logger.info("resumed from %s at step %d", resume_dir, start_step)

        callback_cfgs = list(config.get("callbacks") or [{"type": "MFLossMonitor"}])
        cbs = [build_from_config(c, T.CALLBACK, initial_step=start_step) for c in callback_cfgs]
        cbs += _balance_callback(network, cbs)
        cbs += list(callbacks or [])
        logger.info("model %s: %.2fM parameters, seq_length %d; %d steps (%d per epoch x %d epochs), global "
                    "batch %d sequences", _model_label(self.model_name, network), _param_count(network) / 1e6,
                    seq_length, total_steps, steps_per_epoch, epochs, global_batch * env["device_num"])
        cb = CallbackParams(
            cur_step_num=start_step, cur_epoch_num=start_step // steps_per_epoch + 1, batch_num=steps_per_epoch,
            epoch_num=epochs, total_steps=total_steps, net_outputs=None, network=network,
            train_network=train_step, optimizer=train_step.optimizer, lr=0.0,
            tokens_per_step=global_batch * seq_length * env["device_num"],
            flops_per_token=model_config.flops_per_token(), output_dir=output_dir,
            device_target=env["device_target"], rank_id=env["rank_id"],
            consumed_samples=start_step * global_batch * env["device_num"], config_hash=config.hash("model"),
            gradient_accumulation_steps=accum,
            model_section=_plain(config.get("model") or {}))
        if config.get("do_eval"):
            cbs.append(self._eval_callback(config, network, tokenizer, seq_length, env, output_dir))
        monitor = _plain(config.get("monitor_config") or {})
        if monitor.get("monitor_on"):
            from ..core.callback.monitor import TrainingStateMonitor
            cbs.append(TrainingStateMonitor(self.monitor_groups, **monitor, rank_id=env["rank_id"]))
        cbs += _observers(config, env, output_dir)
        history = self._loop(cb, cbs, dataset, train_step, lr, start_step, total_steps)
        if env["rank_id"] == 0 and history:
            from ..core.callback.observers import plot_loss_curve
            png = plot_loss_curve(history, cb.get("eval_results"), os.path.join(output_dir, "log", "loss_curve.png"))
            logger.info("loss curve: %s", png)
        if has_lora(network) and env["rank_id"] == 0:
            from ..pet import save_adapter
            logger.info("LoRA adapter (adapter_config.json, adapter_model.safetensors) saved to %s",
                        save_adapter(network, os.path.join(output_dir, "adapter")))
        if cb.get("stop_reason"):
            raise TrainingStopped(cb.stop_reason)
        return history

    def _eval_callback(self, config, network, tokenizer, seq_length, env, output_dir):
        """Evaluate loss/perplexity on eval_dataset every eval_step_interval steps (and at the end)."""
        batch_size = _eval_batch_size(config)
        dataset = self._build_dataset(config, "eval", tokenizer, seq_length, batch_size, env,
                                      vocab_size=getattr(network.config, "vocab_size", None))
        interval = int(config.get("eval_step_interval") or 0)
        epoch_interval = int(config.get("eval_epoch_interval") or 0)
        if interval <= 0 and epoch_interval <= 0:
            interval = 100
        path = os.path.join(output_dir, "log", "eval_metrics.jsonl") if env["rank_id"] == 0 else None
        return _EvalDuringTraining(network, dataset, interval, path, epoch_interval)

    def _build_train_step(self, config, network, planned_steps: int, accum: int, device_num: int = 1):
        """Optimizer (with its LR schedule over the planned steps) wrapped in the runner_wrapper cell."""
        lr, params = _schedules_and_groups(config, network, planned_steps, device_num)
        opt_cfg = dict(config.optimizer)
        opt_cfg.pop("swap", None)  # upstream's key; the config check refuses any value but False
        optimizer = build_from_config(opt_cfg, T.OPTIMIZER, params=params, learning_rate=lr)
        network.set_train(True)
        wrapper_cfg = dict(config.get("runner_wrapper") or {"type": "MFTrainOneStepCell"})
        extra = {}
        monitor = _plain(config.get("monitor_config") or {})
        if monitor.get("monitor_on"):
            from ..core.callback.monitor import norm_groups
            names = [p.name for p in optimizer.parameters]
            self.monitor_groups, extra["norm_groups"] = norm_groups(names, monitor.get("target"),
                                                                    monitor.get("invert", False))
        train_step = build_from_config(wrapper_cfg, T.WRAPPER, network=network, optimizer=optimizer,
                                       gradient_accumulation_steps=accum, **extra)
        train_step.set_train(True)
        return train_step, lr

    @staticmethod
    def _loop(cb, cbs, dataset, train_step, lr, start_step: int, total_steps: int) -> List[dict]:
        """Run steps start_step+1 .. total_steps, calling the callbacks; SIGTERM ends it after the current step."""
        from mindspore.train import RunContext

        ctx = RunContext(cb)
        samples_per_step = cb.tokens_per_step // int(cb.network.config.seq_length)

        def on_sigterm(signum, frame):
            logger.warning("SIGTERM: stopping after this step and saving a checkpoint")
            ctx.request_stop()

        previous = signal.signal(signal.SIGTERM, on_sigterm) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            for c in cbs:
                c.on_train_begin(ctx)
            # The dataset is one endless stream cut into epochs (resumed ones start part-way), so batches
            # are drawn from it by step and the epoch follows from the step number.
            batches = _endless(dataset.create_tuple_iterator(num_epochs=-1, output_numpy=False))
            for step in range(start_step + 1, total_steps + 1):
                if ctx.get_stop_requested():
                    break
                epoch = (step - 1) // cb.batch_num + 1
                if epoch != cb.cur_epoch_num or step == start_step + 1:
                    cb.cur_epoch_num = epoch
                    for c in cbs:
                        c.on_train_epoch_begin(ctx)
                cb.cur_step_num = step
                cb.lr = lr.value(step - 1)
                for c in cbs:
                    c.on_train_step_begin(ctx)
                cb.net_outputs = train_step(*next(batches))
                cb.consumed_samples = step * samples_per_step
                for c in cbs:
                    c.on_train_step_end(ctx)
                if step % cb.batch_num == 0 or step == total_steps:
                    for c in cbs:
                        c.on_train_epoch_end(ctx)
            for c in cbs:
                c.on_train_end(ctx)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        monitor = next((c for c in cbs if hasattr(c, "history")), None)
        return monitor.history if monitor else []

    def _build_dataset(self, config, split, tokenizer, seq_length, batch_size, env, skip_samples: int = 0,
                       vocab_size: Optional[int] = None):
        task = dict(config.get(f"{split}_dataset_task") or {"type": "CausalLanguageModelDataset"})
        # upstream's rule at the point of use: the task's dataset_config is <split>_dataset when that is set
        dataset_config = dict(config.get(f"{split}_dataset") or task.get("dataset_config") or {})
        if not dataset_config:
            raise ValueError(f"{split}_dataset is not set in the config")
        dataset_config["batch_size"] = batch_size
        task["dataset_config"] = dataset_config
        return build_from_config(task, T.DATASET, tokenizer=tokenizer, seq_length=seq_length,
                                 rank_id=env["rank_id"], device_num=env["device_num"],
                                 seed=int(config.get("seed") or 0), skip_samples=skip_samples,
                                 vocab_size=vocab_size)

    # ---------------------------------------------------------------- eval
    def evaluate(self, config, network=None, tokenizer=None, dataset=None) -> dict:
        """Mean token loss and perplexity over eval_dataset, or the benchmarks the YAML's `metric:` lists.

        Without `metric` the result is {loss, perplexity, tokens}; with it, {benchmark name: result} (see
        mindformers/evaluation/benchmarks.py), also written to output_dir/eval/<name>.json.
        """
        env = build_context(config)
        tokenizer = build_tokenizer(config, tokenizer)
        network = build_model(config, network)
        metrics = config.get("metric")
        if not metrics:
            result = score_dataset(network, self._eval_dataset(config, tokenizer, network, env, dataset))
            logger.info("eval: loss %.4f | perplexity %.3f | %d tokens", result["loss"], result["perplexity"],
                        result["tokens"])
            return result
        from ..evaluation import format_table
        results = {}
        for spec in [metrics] if isinstance(metrics, dict) else list(metrics):
            metric = build_from_config(spec, T.METRIC)
            if getattr(metric, "needs_dataset", False):
                outcome = metric.evaluate(network, tokenizer, self._eval_dataset(config, tokenizer, network, env,
                                                                                  dataset))
            else:
                if tokenizer is None:
                    raise ValueError(f"metric {spec.get('type')} needs processor.tokenizer in the config")
                outcome = metric.evaluate(network, tokenizer)
            results[outcome["benchmark"]] = outcome
            if env["rank_id"] == 0:
                out_dir = os.path.join(config.get("output_dir") or "./output", "eval")
                os.makedirs(out_dir, exist_ok=True)
                with open(os.path.join(out_dir, f"{outcome['benchmark']}.json"), "w", encoding="utf-8") as f:
                    json.dump(outcome, f, indent=1, ensure_ascii=False)
        logger.info("eval results:\n%s", format_table(list(results.values())))
        return results

    def _eval_dataset(self, config, tokenizer, network, env, dataset=None):
        if dataset is not None:
            return dataset
        return self._build_dataset(config, "eval", tokenizer, int(network.config.seq_length),
                                   _eval_batch_size(config), env,
                                   vocab_size=getattr(network.config, "vocab_size", None))

    # ---------------------------------------------------------------- predict
    def predict(self, config, network=None, tokenizer=None, inputs=None, max_new_tokens: Optional[int] = None
                ) -> List[str]:
        """Continue each prompt with `generation_config` (KV-cached when model_config.use_past is True)."""
        from ..generation import generate

        build_context(config)
        tokenizer = build_tokenizer(config, tokenizer)
        if tokenizer is None:
            raise ValueError("predict needs processor.tokenizer in the config")
        network = build_model(config, network)
        network.set_train(False)
        prompts = _read_prompts(inputs if inputs is not None else config.get("input_data"))
        gen = predict_generation_config(config)
        if max_new_tokens is not None:
            gen = gen.update(max_new_tokens=int(max_new_tokens))
        batch_size = int(config.get("predict_batch_size") or 8)
        outputs = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            new_ids = generate(network, batch, gen, tokenizer=tokenizer)
            for prompt, ids in zip(batch, new_ids):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                outputs.append(text)
                print(f"{prompt!r} -> {text!r}", flush=True)
        out_dir = config.get("output_dir") or "./output"
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "predict_results.jsonl"), "w", encoding="utf-8") as f:
            for p, o in zip(prompts, outputs):
                f.write(json.dumps({"prompt": p, "output": o}, ensure_ascii=False) + "\n")
        return outputs


def _shard_for_semi_auto_parallel(config, network, env):
    """Under semi-auto/auto parallel (Ascend), set the shard strategies of parallel_config's plan."""
    from ..core.context import parallel_mode_name

    if not config.get("use_parallel") or parallel_mode_name(config) == "data_parallel":
        return
    from ..parallel import MeshLayout, ShardPlan, apply_plan

    plan = ShardPlan.for_network(network, MeshLayout.from_config(config.get("parallel_config"), env["device_num"]))
    apply_plan(network, plan)
    logger.info("shard plan:\n%s", plan.describe())


# generation keys upstream keeps in model_config (read when the YAML sets them there), by GenerationConfig name
MODEL_CONFIG_GENERATION_KEYS = {"do_sample": "do_sample", "top_k": "top_k", "top_p": "top_p",
                                "repetition_penalty": "repetition_penalty", "max_decode_length": "max_length"}


def predict_generation_config(config):
    """Decoding settings, each layer over the one before: `pretrained_model_dir`/generation_config.json, the
    generation keys the YAML sets in `model.model_config` (upstream's place for them), the `generation_config`
    section."""
    from ..generation import GenerationConfig

    model_cfg = (config.get("model") or {}).get("model_config") or {}
    from_model = {ours: model_cfg[key] for key, ours in MODEL_CONFIG_GENERATION_KEYS.items() if key in model_cfg}
    yaml_keys = {**from_model, **_plain(config.get("generation_config") or {})}
    model_dir = config.get("pretrained_model_dir")
    if model_dir:
        from ..tools.paths import resolve_repo_path
        model_dir = resolve_repo_path(model_dir, "pretrained_model_dir")
        if os.path.isfile(os.path.join(model_dir, "generation_config.json")):
            base = GenerationConfig.read_pretrained(model_dir)
            logger.info("generation defaults from %s/generation_config.json: %s; the YAML sets %s", model_dir,
                        base, yaml_keys or "nothing")
            return GenerationConfig.from_pretrained(model_dir, **yaml_keys)
    return GenerationConfig.from_dict(yaml_keys)


def _dict_diff(old: dict, new: dict, prefix: str) -> List[str]:
    """'key: old -> new' for every leaf that differs between two nested dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _dict_diff(a, b, f"{prefix}.{key}")
        elif a != b:
            out.append(f"{prefix}.{key}: {a!r} -> {b!r}")
    return out


def _plain(section) -> dict:
    """A config section as a plain dict (MindFormerConfig nodes are dict subclasses with attribute access)."""
    return {key: _plain(value) if isinstance(value, dict) else value for key, value in dict(section).items()}


def _read_prompts(data) -> List[str]:
    if data is None or data == []:
        raise ValueError("predict needs prompts: --predict_data 'text' ... or a file with one prompt per line")
    items = [data] if isinstance(data, str) else list(data)
    if len(items) == 1 and os.path.isfile(items[0]):
        with open(items[0], encoding="utf-8") as f:
            items = [line.rstrip("\n") for line in f if line.strip()]
        if not items:
            raise ValueError(f"--predict_data {data[0] if isinstance(data, list) else data}: the file is empty")
    return items


def _check_vocab(tokenizer, network):
    """A tokenizer with more ids than the model's embedding table would index past it: refuse it up front."""
    model_vocab = getattr(getattr(network, "config", None), "vocab_size", None)
    if tokenizer is not None and model_vocab and tokenizer.vocab_size > model_vocab:
        raise ValueError(f"processor.tokenizer has {tokenizer.vocab_size} ids but model_config.vocab_size is "
                         f"{model_vocab}; use the model's own tokenizer or raise vocab_size")


def _check_columns_fit(dataset, network):
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


class _EvalDuringTraining(Callback):
    """Scores eval_dataset every `interval` steps and/or every `epoch_interval` epochs (0 = not by that measure)
    and at the end of training; logs and appends to a jsonl file."""

    def __init__(self, network, dataset, interval: int, path: Optional[str], epoch_interval: int = 0):
        super().__init__()
        self.network, self.dataset, self.interval, self.path = network, dataset, max(0, interval), path
        self.epoch_interval = max(0, epoch_interval)
        self.results = []
        self._last = None

    def _run(self, step: int, cb):
        result = {"step": step, **score_dataset(self.network, self.dataset)}
        self.results.append(result)
        cb.eval_results = self.results  # for TensorBoard and the loss curve
        self._last = step
        logger.info("eval at step %d: loss %.4f | perplexity %.3f", step, result["loss"], result["perplexity"])
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        if self.interval and cb.cur_step_num % self.interval == 0:
            self._run(cb.cur_step_num, cb)

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        if self.epoch_interval and cb.cur_epoch_num % self.epoch_interval == 0 and cb.cur_step_num != self._last:
            self._run(cb.cur_step_num, cb)

    def on_train_end(self, run_context):
        cb = run_context.original_args()
        if cb.cur_step_num and cb.cur_step_num != self._last:
            self._run(cb.cur_step_num, cb)
