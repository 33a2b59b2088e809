"""Trainer: the notebook/CLI entry that runs a config's task (train, finetune, eval, predict)."""
import logging
import os
from typing import List, Optional, Union

from ..config import MindFormerConfig, load_config
from .training_args import TrainingArguments
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister

logger = logging.getLogger("mindformers")


class Trainer:
    """Runs the task a config describes; components passed in replace the ones the config would build.

    `Trainer(args="configs/llama/pretrain_llama_tiny.yaml").train()` trains from a YAML path;
    `args` may also be a loaded MindFormerConfig or TrainingArguments (then pass `model` and the datasets).
    """

    def __init__(self, args: Union[str, MindFormerConfig, TrainingArguments, None] = None, task: Optional[str] = None,
                 model=None, tokenizer=None, train_dataset=None, eval_dataset=None, callbacks=None):
        if args is None:
            raise ValueError("Trainer needs args: a YAML config path or a MindFormerConfig")
        if isinstance(args, str):
            if not os.path.isfile(args):
                raise FileNotFoundError(f"Trainer args: config file '{args}' not found")
            args = load_config(args)
        elif isinstance(args, TrainingArguments):
            args = args.to_config()
        elif not isinstance(args, MindFormerConfig):
            args = MindFormerConfig(dict(args))
        self.config = args
        trainer_cfg = dict(self.config.get("trainer") or {"type": "CausalLanguageModelingTrainer"})
        trainer_cls = MindFormerRegister.get_cls(T.TRAINER, trainer_cfg.pop("type"))
        self.task = task
        self.impl = trainer_cls(**trainer_cfg)
        self.model, self.tokenizer = model, tokenizer
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.callbacks = callbacks

    def train(self, **overrides) -> List[dict]:
        """Pretrain from scratch (or from load_checkpoint); returns the per-step log records."""
        return self.impl.train(self._with(overrides, run_mode="train"), network=self.model,
                               tokenizer=self.tokenizer, dataset=self.train_dataset, callbacks=self.callbacks)

    def finetune(self, **overrides) -> List[dict]:
        """Train starting from load_checkpoint weights."""
        return self.impl.train(self._with(overrides, run_mode="finetune"), network=self.model,
                               tokenizer=self.tokenizer, dataset=self.train_dataset, callbacks=self.callbacks,
                               is_finetune=True)

    def evaluate(self, **overrides) -> dict:
        """Loss and perplexity on eval_dataset."""
        return self.impl.evaluate(self._with(overrides, run_mode="eval"), network=self.model,
                                  tokenizer=self.tokenizer, dataset=self.eval_dataset)

    def predict(self, input_data=None, **overrides) -> List[str]:
        """Generate continuations of `input_data` (a string, a list, or a file of prompts)."""
        return self.impl.predict(self._with(overrides, run_mode="predict"), network=self.model,
                                 tokenizer=self.tokenizer, inputs=input_data)

    def _with(self, overrides, **fixed) -> MindFormerConfig:
        cfg = self.config
        if overrides or fixed:
            import copy
            cfg = copy.deepcopy(cfg)
            cfg.merge_from_dict({**fixed, **overrides})
        return cfg
