"""Chat templates: render a conversation with the jinja2 template from a Hugging Face tokenizer_config.json."""
import os
from typing import Dict, List, Optional

from ..tools.textfile import read_json

# Used when neither a chat_template option nor the tokenizer provide one (chat CLI, sharegpt/pairwise data).
PLAIN_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
                  "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
                  "{% else %}Assistant: {{ m['content'] }}\n{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}Assistant:{% endif %}")
PLAIN_STOP = ["\nUser:"]


def load_chat_template(path: str) -> str:
    """The `chat_template` of a tokenizer_config.json (the file or its directory)."""
    file = os.path.join(path, "tokenizer_config.json") if os.path.isdir(path) else path
    config = read_json(file)
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # HF allows named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default")
    if not isinstance(template, str):
        raise ValueError(f"{file} has no chat_template string (a jinja2 template rendering `messages`)")
    return template


def apply_chat_template(messages: List[Dict[str, str]], tokenizer=None, chat_template: Optional[str] = None,
                        tokenizer_config: Optional[str] = None, add_generation_prompt: bool = True,
                        **extra) -> str:
    """Prompt text for `messages` ([{"role", "content"}, ...]).

    The template comes from `chat_template`, else from `tokenizer_config` (a tokenizer_config.json path),
    else from the tokenizer's `chat_template` attribute. bos/eos token strings come from the tokenizer.
    """
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = chat_template
    if template is None and tokenizer_config is not None:
        template = load_chat_template(tokenizer_config)
    if template is None:
        template = getattr(tokenizer, "chat_template", None)
    if template is None:
        raise ValueError("no chat template: pass chat_template= or tokenizer_config= (a tokenizer_config.json "
                         "with a chat_template key)")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=getattr(tokenizer, "bos_token", None) or "", eos_token=getattr(tokenizer, "eos_token", None) or "",
        **extra)


def encode_chat(messages: List[Dict[str, str]], tokenizer, chat_template: Optional[str] = None) -> List[int]:
    """Prompt ids for `messages` rendered with the chat template (see apply_chat_template) and a generation
    prompt; bos is added only when the rendered text does not already start with it."""
    text = apply_chat_template(messages, tokenizer, chat_template=chat_template)
    bos = getattr(tokenizer, "bos_token", None)
    return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))
