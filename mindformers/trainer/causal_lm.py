"""CausalLanguageModelingTrainer: builds every component from a config and runs train/finetune/eval/predict."""
import json
import logging
import math
import os
from typing import List, Optional

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..checkpoint import load_weights
from ..core.callback import CallbackParams
from ..core.context import build_context
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister, build_from_config

logger = logging.getLogger("mindformers")


def build_tokenizer(config, tokenizer=None):
    """The tokenizer from `processor.tokenizer` (or the one given)."""
    if tokenizer is not None:
        return tokenizer
    tok_cfg = (config.get("processor") or {}).get("tokenizer")
    return build_from_config(tok_cfg, T.TOKENIZER) if tok_cfg else None


def build_model(config, network=None):
    """The network from `model.model_config` + `model.arch`, with `load_checkpoint` weights if set."""
    if network is None:
        model_cfg = config.model.model_config
        model_config = build_from_config(model_cfg, T.CONFIG)
        network = build_from_config(config.model.arch, T.MODELS, config=model_config)
    if config.get("load_checkpoint"):
        info = load_weights(network, config.load_checkpoint)
        logger.info("loaded weights from %s", info["file"])
    return network


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
        from mindspore.train import RunContext

        if is_finetune and not (config.get("load_checkpoint") or config.get("pretrained_model_dir")
                                or network is not None):
            raise ValueError("run_mode finetune needs weights to start from: set load_checkpoint "
                             "(or pretrained_model_dir)")
        if config.get("pretrained_model_dir"):
            raise NotImplementedError("pretrained_model_dir (Hugging Face directories) is not supported yet; "
                                      "use load_checkpoint with a safetensors checkpoint of this suite")
        env = build_context(config)
        output_dir = os.path.abspath(config.get("output_dir") or "./output")
        os.makedirs(output_dir, exist_ok=True)
        runner = config.get("runner_config") or {}
        accum = int(runner.get("gradient_accumulation_steps") or 1)
        batch_size = int(runner.get("batch_size") or config.train_dataset.get("batch_size") or 1)
        epochs = int(runner.get("epochs") or 1)

        tokenizer = build_tokenizer(config, tokenizer)
        network = build_model(config, network)
        model_config = network.config
        seq_length = int(model_config.seq_length)
        if dataset is None:
            dataset = self._build_dataset(config, "train", tokenizer, seq_length, batch_size * accum, env)
        steps_per_epoch = dataset.get_dataset_size()
        if steps_per_epoch == 0:
            raise ValueError(f"train_dataset: fewer samples than one global batch ({batch_size * accum}); "
                             f"lower runner_config.batch_size or add data")
        planned_steps = steps_per_epoch * epochs
        # stop_step ends the run early but leaves the LR schedule spanning the planned run, so a run
        # stopped at N and resumed matches one that never stopped
        stop_step = int(runner.get("stop_step") or 0)
        total_steps = min(planned_steps, stop_step) if stop_step else planned_steps

        lr_cfg = dict(config.lr_schedule)
        if lr_cfg.get("total_steps") in (None, -1):
            lr_cfg["total_steps"] = planned_steps
        lr = build_from_config(lr_cfg, T.LR)
        opt_cfg = dict(config.optimizer)
        from ..core.optim import get_optimizer_grouped_parameters
        params = get_optimizer_grouped_parameters(network, opt_cfg.get("weight_decay", 0.0) or 0.0)
        optimizer = build_from_config(opt_cfg, T.OPTIMIZER, params=params, learning_rate=lr)
        network.set_train(True)
        wrapper_cfg = dict(config.get("runner_wrapper") or {"type": "MFTrainOneStepCell"})
        train_step = build_from_config(wrapper_cfg, T.WRAPPER, network=network, optimizer=optimizer,
                                       gradient_accumulation_steps=accum)
        train_step.set_train(True)

        callback_cfgs = list(config.get("callbacks") or [{"type": "MFLossMonitor"}])
        cbs = [build_from_config(c, T.CALLBACK) for c in callback_cfgs] + list(callbacks or [])
        tokens_per_step = batch_size * accum * seq_length * env["device_num"]
        n_params = _param_count(network)
        logger.info("model %s: %.2fM parameters, seq_length %d; %d steps (%d per epoch x %d epochs), global "
                    "batch %d sequences", type(network).__name__, n_params / 1e6, seq_length, total_steps,
                    steps_per_epoch, epochs, batch_size * accum * env["device_num"])
        cb = CallbackParams(
            cur_step_num=0, cur_epoch_num=0, batch_num=steps_per_epoch, epoch_num=epochs, total_steps=total_steps,
            net_outputs=None, network=network, train_network=train_step, optimizer=optimizer, lr=0.0,
            tokens_per_step=tokens_per_step, flops_per_token=model_config.flops_per_token(),
            output_dir=output_dir, device_target=env["device_target"], rank_id=env["rank_id"],
            consumed_samples=0, config_hash=config.hash("model") if hasattr(config, "hash") else None)
        ctx = RunContext(cb)
        for c in cbs:
            c.on_train_begin(ctx)
        step = 0
        # one iterator for all epochs: the dataset reshuffles per epoch only within one iterator
        batches = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=False)
        for epoch in range(epochs):
            cb.cur_epoch_num = epoch + 1
            for c in cbs:
                c.on_train_epoch_begin(ctx)
            for batch in batches:  # the iterator ends each epoch and restarts for the next
                if step >= total_steps or ctx.get_stop_requested():
                    break
                step += 1
                cb.cur_step_num = step
                cb.lr = lr.value(step - 1)
                for c in cbs:
                    c.on_train_step_begin(ctx)
                cb.net_outputs = train_step(*batch)
                cb.consumed_samples = step * batch_size * accum * env["device_num"]
                for c in cbs:
                    c.on_train_step_end(ctx)
            for c in cbs:
                c.on_train_epoch_end(ctx)
            if step >= total_steps or ctx.get_stop_requested():
                break
        for c in cbs:
            c.on_train_end(ctx)
        monitor = next((c for c in cbs if hasattr(c, "history")), None)
        return monitor.history if monitor else []

    def _build_dataset(self, config, split, tokenizer, seq_length, batch_size, env):
        task = config.get(f"{split}_dataset_task")
        ds_cfg = config.get(f"{split}_dataset")
        if not task and not ds_cfg:
            raise ValueError(f"{split}_dataset is not set in the config")
        if not task:
            task = {"type": "CausalLanguageModelDataset", "dataset_config": ds_cfg}
        task = dict(task)
        dataset_config = dict(task.get("dataset_config") or ds_cfg)
        dataset_config["batch_size"] = batch_size
        task["dataset_config"] = dataset_config
        return build_from_config(task, T.DATASET, tokenizer=tokenizer, seq_length=seq_length,
                                 rank_id=env["rank_id"], device_num=env["device_num"],
                                 seed=int(config.get("seed") or 0))

    # ---------------------------------------------------------------- eval
    def evaluate(self, config, network=None, tokenizer=None, dataset=None) -> dict:
        """Mean token loss and perplexity over eval_dataset."""
        env = build_context(config)
        tokenizer = build_tokenizer(config, tokenizer)
        network = build_model(config, network)
        seq_length = int(network.config.seq_length)
        batch_size = int((config.get("eval_dataset") or {}).get("batch_size")
                         or (config.get("runner_config") or {}).get("batch_size") or 1)
        if dataset is None:
            dataset = self._build_dataset(config, "eval", tokenizer, seq_length, batch_size, env)
        scorer = _TokenLoss(network, int(getattr(network.config, "ignore_token_id", -100)))
        scorer.set_train(False)
        network.set_train(False)
        total, count = 0.0, 0
        for (input_ids, *_) in dataset.create_tuple_iterator(num_epochs=1):
            loss_sum, n = scorer(input_ids)
            total += float(loss_sum.asnumpy())
            count += int(n.asnumpy())
        if count == 0:
            raise ValueError("eval_dataset produced no tokens to score")
        loss = total / count
        result = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": count}
        logger.info("eval: loss %.4f | perplexity %.3f | %d tokens", loss, result["perplexity"], count)
        return result

    # ---------------------------------------------------------------- predict
    def predict(self, config, network=None, tokenizer=None, inputs=None, max_new_tokens: Optional[int] = None
                ) -> List[str]:
        """Greedy continuation of each prompt (one compiled graph of fixed length seq_length)."""
        build_context(config)
        tokenizer = build_tokenizer(config, tokenizer)
        if tokenizer is None:
            raise ValueError("predict needs processor.tokenizer in the config")
        network = build_model(config, network)
        network.set_train(False)
        prompts = _read_prompts(inputs if inputs is not None else config.get("input_data"))
        gen = config.get("generation_config") or {}
        seq_length = int(network.config.seq_length)
        max_new = int(max_new_tokens or gen.get("max_new_tokens") or 32)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        outputs = []
        for prompt in prompts:
            ids = tokenizer.encode(prompt)
            if len(ids) >= seq_length:
                ids = ids[-(seq_length - 1):]
            start = len(ids)
            while len(ids) < min(seq_length, start + max_new):
                buf = np.full((1, seq_length), pad, dtype=np.int32)
                buf[0, :len(ids)] = ids
                logits = network(ms.Tensor(buf))
                next_id = int(np.argmax(logits[0, len(ids) - 1].asnumpy()))
                ids.append(next_id)
                if next_id == tokenizer.eos_token_id:
                    break
            text = tokenizer.decode(ids[start:], skip_special_tokens=True)
            outputs.append(text)
            print(f"{prompt!r} -> {text!r}", flush=True)
        out_dir = config.get("output_dir") or "./output"
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "predict_results.jsonl"), "w", encoding="utf-8") as f:
            for p, o in zip(prompts, outputs):
                f.write(json.dumps({"prompt": p, "output": o}, ensure_ascii=False) + "\n")
        return outputs


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


class _TokenLoss(nn.Cell):
    """Sum of next-token cross-entropy and the number of scored tokens for a (B, S+1) batch."""

    def __init__(self, network, ignore_index: int):
        super().__init__()
        self.network = network
        self.ignore_index = ignore_index

    def construct(self, input_ids):
        logits = self.network(input_ids[:, :-1]).astype(ms.float32)  # (B, S, V)
        labels = input_ids[:, 1:]
        ignored = labels == self.ignore_index
        mask = (~ignored).astype(ms.float32)
        safe = ops.select(ignored, ops.zeros_like(labels), labels).astype(ms.int32)
        logp = ops.log_softmax(logits, -1)
        picked = ops.gather_elements(logp, 2, safe.expand_dims(-1)).squeeze(-1)
        return -(picked * mask).sum(), mask.sum()
