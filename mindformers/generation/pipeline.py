"""pipeline("text_generation", model=..., tokenizer=...): prompts in, continuations out, for notebooks."""
from typing import List, Optional, Union

from .config import GenerationConfig
from .generate import generate


class TextGenerationPipeline:
    """Calls generate() on text prompts and decodes the continuations."""

    def __init__(self, model, tokenizer, generation_config: Optional[Union[GenerationConfig, dict]] = None):
        if tokenizer is None:
            raise ValueError("pipeline('text_generation') needs tokenizer=")
        self.model = model
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        model.set_train(False)

    def __call__(self, prompts: Union[str, List[str]], streamer=None, **kwargs) -> Union[str, List[str]]:
        """The continuation of one prompt (a str), or of each prompt in a list; kwargs override generation keys."""
        single = isinstance(prompts, str)
        outputs = generate(self.model, [prompts] if single else list(prompts), self.generation_config,
                           tokenizer=self.tokenizer, streamer=streamer, **kwargs)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs]
        return texts[0] if single else texts


_TASKS = {"text_generation": TextGenerationPipeline, "text-generation": TextGenerationPipeline}


def pipeline(task: str, model, tokenizer=None, generation_config=None) -> TextGenerationPipeline:
    """A pipeline for `task` (only "text_generation")."""
    if task not in _TASKS:
        raise ValueError(f"pipeline task {task!r} is not supported; valid: {', '.join(_TASKS)}")
    return _TASKS[task](model, tokenizer, generation_config)
