"""Text generation: GenerationConfig, generate() over a static KV cache, streamers, chat templates, pipeline."""
from ..tokenization.chat_template import apply_chat_template, load_chat_template
from .config import GenerationConfig
from .generate import generate
from .pipeline import TextGenerationPipeline, pipeline
from .streamers import TextIteratorStreamer, TextStreamer

__all__ = ["GenerationConfig", "generate", "TextStreamer", "TextIteratorStreamer", "apply_chat_template",
           "load_chat_template", "pipeline", "TextGenerationPipeline"]
