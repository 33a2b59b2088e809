"""CausalLanguageModelingTrainer: builds every component from a config and runs train/finetune/eval/predict."""
import copy
import json
import logging
import os
from typing import List, Optional

import numpy as np

from ..config import plain
from ..checkpoint import find_resume_checkpoint, load_train_state, read_state
from ..core.callback import CallbackParams
from ..core.callback.monitor import TrainingStateMonitor
from ..core.callback.observers import plot_loss_curve
from ..core.context import build_context
from ..evaluation import format_table
from ..evaluation.during_training import EvalDuringTraining
from ..evaluation.scoring import score_dataset
from ..generation.predict import continue_prompts, predict_generation_config, read_prompts
from ..pet import has_lora, save_adapter
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister, build_from_config
from ..tools.rundir import MIN_FREE_BYTES, check_output_dir, checkpoint_bytes
from .builders import (balance_callback, build_dataset, build_model, build_tokenizer, build_train_step,
                       check_columns_fit, check_vocab, observers, preference_network,
                       apply_parallel_layout, train_batch)
from .loop import data_skip_steps, run_loop

logger = logging.getLogger("mindformers")


class TrainingStopped(RuntimeError):
    """Training stopped on purpose before its last step (e.g. non-finite loss with check_for_nan...)."""


def _model_label(model_name: Optional[str], network) -> str:
    """The network's class, with trainer.model_name (upstream's label for the run's model) when set."""
    return f"{model_name} ({type(network).__name__})" if model_name else type(network).__name__


def _eval_batch_size(config) -> int:
    return int((config.get("eval_dataset") or {}).get("batch_size")
               or (config.get("runner_config") or {}).get("batch_size") or 1)


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
        epochs = int(runner.get("epochs") or 1)

        resume_dir = None
        if config.get("resume_training"):
            resume_dir = find_resume_checkpoint(config.get("load_checkpoint"), config.resume_training,
                                                by_time=bool(config.get("resume_by_last_timestamp_ckpt")))
            config = copy.deepcopy(config)
            config.load_checkpoint = resume_dir
        tokenizer = build_tokenizer(config, tokenizer)
        network = build_model(config, network)
        if any(isinstance(c, dict) and c.get("type") == "CheckpointMonitor" for c in config.get("callbacks") or []):
            check_output_dir(output_dir, MIN_FREE_BYTES + checkpoint_bytes(network))  # before the compile
        check_vocab(tokenizer, network)
        apply_parallel_layout(config, network, env)
        model_config = network.config
        seq_length = int(model_config.seq_length)
        start_step = 0
        if resume_dir:
            state = read_state(resume_dir)
            start_step = int(state["step"])
            if state.get("config_hash") and state["config_hash"] != config.hash("model"):
                changes = _dict_diff(state.get("model") or {}, plain(config.get("model") or {}), "model")
                logger.warning("resuming from %s, saved with a different model config%s", resume_dir,
                               f": {'; '.join(changes[:10])}" if changes else "")
        # what this worker reads per step (runner_config.batch_size as upstream means it in each parallel mode) and
        # the distinct data shards read alongside it: the workers of one tensor-parallel group read one
        batch = train_batch(config, env)
        global_batch, replicas = batch.rows, batch.shards
        if dataset is None:
            dataset = build_dataset(config, "train", tokenizer, seq_length, global_batch, env,
                                          skip_samples=data_skip_steps(config, start_step) * global_batch,
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

        step_network = preference_network(config, network)  # a reward model is the network itself
        check_columns_fit(dataset, step_network)
        train_step, lr, monitor_groups = build_train_step(config, step_network, planned_steps, accum, batch)
        if resume_dir:
            load_train_state(train_step, resume_dir, network)
            logger.info("resumed from %s at step %d", resume_dir, start_step)

        callback_cfgs = list(config.get("callbacks") or [{"type": "MFLossMonitor"}])
        cbs = [build_from_config(c, T.CALLBACK, initial_step=start_step) for c in callback_cfgs]
        cbs += balance_callback(network, cbs)
        cbs += list(callbacks or [])
        logger.info("model %s: %.2fM parameters, seq_length %d; %d steps (%d per epoch x %d epochs), global "
                    "batch %d sequences", _model_label(self.model_name, network), _param_count(network) / 1e6,
                    seq_length, total_steps, steps_per_epoch, epochs, global_batch * replicas)
        cb = CallbackParams(
            cur_step_num=start_step, cur_epoch_num=start_step // steps_per_epoch + 1, batch_num=steps_per_epoch,
            epoch_num=epochs, total_steps=total_steps, net_outputs=None, network=network,
            train_network=train_step, optimizer=train_step.optimizer, lr=0.0,
            tokens_per_step=global_batch * seq_length * replicas,
            flops_per_token=model_config.flops_per_token(), output_dir=output_dir,
            device_target=env["device_target"], rank_id=env["rank_id"],
            consumed_samples=start_step * global_batch * replicas, config_hash=config.hash("model"),
            gradient_accumulation_steps=accum,
            model_section=plain(config.get("model") or {}))
        if config.get("do_eval"):
            cbs.append(self._eval_callback(config, network, tokenizer, seq_length, env, output_dir))
        monitor = plain(config.get("monitor_config") or {})
        if monitor.get("monitor_on"):
            cbs.append(TrainingStateMonitor(monitor_groups, **monitor, rank_id=env["rank_id"]))
        cbs += observers(config, env, output_dir)
        history = run_loop(cb, cbs, dataset, train_step, lr, start_step, total_steps)
        if env["rank_id"] == 0 and history:
            png = plot_loss_curve(history, cb.get("eval_results"), os.path.join(output_dir, "log", "loss_curve.png"))
            logger.info("loss curve: %s", png)
        if has_lora(network) and env["rank_id"] == 0:
            logger.info("LoRA adapter (adapter_config.json, adapter_model.safetensors) saved to %s",
                        save_adapter(network, os.path.join(output_dir, "adapter")))
        if cb.get("stop_reason"):
            raise TrainingStopped(cb.stop_reason)
        return history

    def _eval_callback(self, config, network, tokenizer, seq_length, env, output_dir):
        """Evaluate loss/perplexity on eval_dataset every eval_step_interval steps (and at the end)."""
        batch_size = _eval_batch_size(config)
        dataset = build_dataset(config, "eval", tokenizer, seq_length, batch_size, env,
                                      vocab_size=getattr(network.config, "vocab_size", None))
        interval = int(config.get("eval_step_interval") or 0)
        epoch_interval = int(config.get("eval_epoch_interval") or 0)
        if interval <= 0 and epoch_interval <= 0:
            interval = 100
        path = os.path.join(output_dir, "log", "eval_metrics.jsonl") if env["rank_id"] == 0 else None
        return EvalDuringTraining(network, dataset, interval, path, epoch_interval)

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
        results = {}
        for spec in [metrics] if isinstance(metrics, dict) else list(metrics):
            # metrics that keep per-item records (output_dir/eval/<name>_samples.jsonl) write them on rank 0 only
            out_dir = (config.get("output_dir") or "./output") if env["rank_id"] == 0 else None
            metric = build_from_config(spec, T.METRIC, output_dir=out_dir)
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
        return build_dataset(config, "eval", tokenizer, int(network.config.seq_length),
                                   _eval_batch_size(config), env,
                                   vocab_size=getattr(network.config, "vocab_size", None))

    # ---------------------------------------------------------------- predict
    def predict(self, config, network=None, tokenizer=None, inputs=None, max_new_tokens: Optional[int] = None
                ) -> List[str]:
        """Continue each prompt with `generation_config` (KV-cached when model_config.use_past is True)."""
        build_context(config)
        tokenizer = build_tokenizer(config, tokenizer)
        if tokenizer is None:
            raise ValueError("predict needs processor.tokenizer in the config")
        network = build_model(config, network)
        network.set_train(False)
        prompts = read_prompts(inputs if inputs is not None else config.get("input_data"))
        gen = predict_generation_config(config)
        if max_new_tokens is not None:
            gen = gen.update(max_new_tokens=int(max_new_tokens))
        outputs = continue_prompts(network, tokenizer, prompts, gen, int(config.get("predict_batch_size") or 8))
        out_dir = config.get("output_dir") or "./output"
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "predict_results.jsonl"), "w", encoding="utf-8") as f:
            for p, o in zip(prompts, outputs):
                f.write(json.dumps({"prompt": p, "output": o}, ensure_ascii=False) + "\n")
        return outputs


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


