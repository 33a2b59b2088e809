"""Trainer: the notebook/CLI entry that runs a config's task (train, finetune, eval, predict)."""
import copy
import logging
import os
from contextlib import contextmanager
from typing import List, Optional, Union

from ..checkpoint.checkpoint import remove_stale_temporaries
from ..config import MindFormerConfig, load_config, validate_config
from .training_args import TrainingArguments
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister
from ..tools.register.register import accepted_kwargs
from ..tools.rundir import check_output_dir, hold_output_dir, launch_rank

logger = logging.getLogger("mindformers")
# upstream's task names that mean a decoder-only language model
TASKS = ("general", "text_generation", None)


class Trainer:
    """Runs the task a config describes; components passed in replace the ones the config would build.

    `Trainer(args="configs/llama/pretrain_llama_tiny.yaml").train()` trains from a YAML path;
    `args` may also be a loaded MindFormerConfig or TrainingArguments (then pass `model` and the datasets).
    """

    def __init__(self, args: Union[str, MindFormerConfig, TrainingArguments, None] = None,
                 task: Optional[str] = "general", model=None, tokenizer=None, train_dataset=None,
                 eval_dataset=None, callbacks=None):
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
        if task not in TASKS:
            raise ValueError(f"Trainer: task '{task}' is not supported (this suite runs causal language modeling: "
                             f"{', '.join(repr(t) for t in TASKS)})")
        self.task = task
        self.impl = trainer_cls(**trainer_cfg)
        self.model, self.tokenizer = model, tokenizer
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.callbacks = [callbacks] if callbacks is not None and not isinstance(callbacks, (list, tuple)) \
            else callbacks

    def train(self, train_checkpoint: Union[str, bool, None] = False,
              resume_from_checkpoint: Union[str, bool, None] = None, resume_training: Union[bool, str, None] = None,
              ignore_data_skip: Optional[bool] = None, data_skip_steps: Optional[int] = None,
              auto_trans_ckpt: Optional[bool] = None, src_strategy: Optional[str] = None,
              transform_process_num: Optional[int] = None, do_eval: Optional[bool] = False) -> List[dict]:
        """Pretrain (from scratch, or from `resume_from_checkpoint` weights); returns the per-step log records.

        Arguments follow upstream's Trainer.train: a checkpoint path or True (the last checkpoint under
        output_dir/checkpoint) loads weights; resume_training, ignore_data_skip, data_skip_steps and do_eval set
        the config keys of the same names."""
        return self._train("train", train_checkpoint, "train_checkpoint", resume_from_checkpoint,
                           resume_training=resume_training, ignore_data_skip=ignore_data_skip,
                           data_skip_steps=data_skip_steps, auto_trans_ckpt=auto_trans_ckpt,
                           src_strategy_path_or_dir=src_strategy, transform_process_num=transform_process_num,
                           do_eval=do_eval or None)

    def finetune(self, finetune_checkpoint: Union[str, bool, None] = False,
                 resume_from_checkpoint: Union[str, bool, None] = None, resume_training: Union[bool, str, None] = None,
                 ignore_data_skip: Optional[bool] = None, data_skip_steps: Optional[int] = None,
                 auto_trans_ckpt: Optional[bool] = None, src_strategy: Optional[str] = None,
                 transform_process_num: Optional[int] = None, do_eval: bool = False) -> List[dict]:
        """Train starting from `finetune_checkpoint` (or load_checkpoint / pretrained_model_dir) weights."""
        return self._train("finetune", finetune_checkpoint, "finetune_checkpoint", resume_from_checkpoint,
                           resume_training=resume_training, ignore_data_skip=ignore_data_skip,
                           data_skip_steps=data_skip_steps, auto_trans_ckpt=auto_trans_ckpt,
                           src_strategy_path_or_dir=src_strategy, transform_process_num=transform_process_num,
                           do_eval=do_eval or None)

    def _train(self, run_mode: str, checkpoint, checkpoint_arg: str, resume_from_checkpoint, **keys) -> List[dict]:
        config = self._run_config(run_mode, checkpoint, checkpoint_arg, resume_from_checkpoint, **keys)
        config, dataset = self._dataset_arg(config, "train", None, self.train_dataset)
        with _holding_output_dir(config):
            return self.impl.train(config, network=self.model, tokenizer=self.tokenizer, dataset=dataset,
                                   callbacks=self.callbacks, is_finetune=run_mode == "finetune")

    def evaluate(self, eval_dataset=None, eval_checkpoint: Union[str, bool, None] = False,
                 auto_trans_ckpt: Optional[bool] = None, src_strategy: Optional[str] = None,
                 transform_process_num: Optional[int] = None, **kwargs) -> dict:
        """Loss and perplexity on eval_dataset (or the `metric:` benchmarks) of the `eval_checkpoint` weights."""
        _refuse_unknown("evaluate", kwargs)
        config = self._run_config("eval", eval_checkpoint, "eval_checkpoint", None, auto_trans_ckpt=auto_trans_ckpt,
                                  src_strategy_path_or_dir=src_strategy, transform_process_num=transform_process_num)
        config, dataset = self._dataset_arg(config, "eval", eval_dataset, self.eval_dataset)
        with _holding_output_dir(config):
            return self.impl.evaluate(config, network=self.model, tokenizer=self.tokenizer, dataset=dataset)

    def predict(self, predict_checkpoint: Union[str, bool, None] = None, auto_trans_ckpt: Optional[bool] = None,
                src_strategy: Optional[str] = None, transform_process_num: Optional[int] = None,
                input_data=None, batch_size: Optional[int] = None, **generation) -> List[str]:
        """Generate continuations of `input_data` (a string, a list, or a file of prompts); other keyword
        arguments are generation_config keys (max_new_tokens, do_sample, top_k, ...)."""
        from ..generation import GenerationConfig

        _refuse_unknown("predict", {k: v for k, v in generation.items() if k not in accepted_kwargs(GenerationConfig)})
        config = self._run_config("predict", predict_checkpoint, "predict_checkpoint", None,
                                  auto_trans_ckpt=auto_trans_ckpt, src_strategy_path_or_dir=src_strategy,
                                  transform_process_num=transform_process_num, predict_batch_size=batch_size,
                                  **{f"generation_config.{k}": v for k, v in generation.items()})
        with _holding_output_dir(config):
            return self.impl.predict(config, network=self.model, tokenizer=self.tokenizer, inputs=input_data)

    def _run_config(self, run_mode: str, checkpoint, checkpoint_arg: str, resume_from_checkpoint,
                    **keys) -> MindFormerConfig:
        """A copy of the config with run_mode, the checkpoint to load and every given (not None) key set."""
        if checkpoint not in (False, None):
            resume_from_checkpoint = checkpoint  # upstream: the older name wins over resume_from_checkpoint
        else:
            checkpoint_arg = "resume_from_checkpoint"
        updates = {"run_mode": run_mode, **{k: v for k, v in keys.items() if v is not None}}
        if resume_from_checkpoint is True:
            updates["load_checkpoint"] = self._last_checkpoint(checkpoint_arg)
        elif isinstance(resume_from_checkpoint, str):
            if not os.path.exists(resume_from_checkpoint):
                raise FileNotFoundError(f"Trainer.{run_mode if run_mode != 'eval' else 'evaluate'}: "
                                        f"{checkpoint_arg} '{resume_from_checkpoint}': no such file or directory")
            updates["load_checkpoint"] = resume_from_checkpoint
        elif resume_from_checkpoint not in (None, False):
            raise TypeError(f"Trainer: {checkpoint_arg} must be a checkpoint path, True (the last checkpoint "
                            f"under output_dir) or False, got {resume_from_checkpoint!r}")
        config = copy.deepcopy(self.config)
        config.merge_from_dict(updates)
        validate_config(config)
        return config

    def _last_checkpoint(self, checkpoint_arg: str) -> str:
        """The newest complete checkpoint under output_dir/checkpoint (upstream's `True` for a checkpoint)."""
        from ..checkpoint import list_checkpoints

        directory = os.path.join(self.config.get("output_dir") or "./output", "checkpoint")
        found = list_checkpoints(directory)
        if not found:
            raise FileNotFoundError(f"Trainer: {checkpoint_arg}=True loads the last checkpoint under {directory}, "
                                    f"but there is none; pass a checkpoint path")
        return found[-1]

    @staticmethod
    def _dataset_arg(config, split: str, given, default):
        """A dataset argument: a path sets <split>_dataset.data_loader.dataset_dir, a mapping replaces the
        <split>_dataset section, anything else is a built dataset used as it is."""
        given = default if given is None else given
        if isinstance(given, str):
            if not os.path.exists(given):
                raise FileNotFoundError(f"Trainer: {split}_dataset '{given}': no such file or directory")
            config.merge_from_dict({f"{split}_dataset.data_loader.dataset_dir": given})
            return config, None
        if isinstance(given, dict):
            config.merge_from_dict({f"{split}_dataset": dict(given)})
            validate_config(config)
            return config, None
        return config, given


@contextmanager
def _holding_output_dir(config):
    """The run's output_dir checked (a directory, writable, not full) and held against a second run for the
    block; checkpoint temporaries a killed run left there are removed first."""
    output_dir = config.get("output_dir") or "./output"
    check_output_dir(output_dir)
    with hold_output_dir(output_dir, launch_rank(bool(config.get("use_parallel")))):
        remove_stale_temporaries(os.path.join(output_dir, "checkpoint"))
        yield


def _refuse_unknown(method: str, kwargs: dict):
    if kwargs:
        raise TypeError(f"Trainer.{method}() got unknown keyword argument(s) {', '.join(sorted(kwargs))}")
