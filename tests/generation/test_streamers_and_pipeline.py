"""Streamers, pipeline(), chat templates and --run_mode predict on the tiny model (GRAPH mode)."""
import json
import threading

import pytest

from mindformers.generation import (TextIteratorStreamer, TextStreamer, apply_chat_template, generate,
                                    load_chat_template, pipeline)

pytestmark = pytest.mark.usefixtures("graph_mode")

PROMPT = "Return the value"


def test_text_streamer_prints_the_final_output(model, tokenizer, capsys):
    new = generate(model, PROMPT, tokenizer=tokenizer, streamer=TextStreamer(tokenizer), max_new_tokens=12,
                   eos_token_id=[])
    assert capsys.readouterr().out == tokenizer.decode(new) + "\n"


def test_iterator_streamer_yields_text_as_it_is_produced(model, tokenizer):
    streamer = TextIteratorStreamer(tokenizer, timeout=60)
    result = {}
    worker = threading.Thread(target=lambda: result.update(ids=generate(
        model, PROMPT, tokenizer=tokenizer, streamer=streamer, max_new_tokens=12, eos_token_id=[])[0]))
    worker.start()
    pieces = list(streamer)
    worker.join()
    assert len(pieces) > 1 and "".join(pieces) == tokenizer.decode(result["ids"])


def test_streamer_refuses_batches(model, tokenizer):
    with pytest.raises(ValueError, match="single prompt"):
        generate(model, [PROMPT, PROMPT], tokenizer=tokenizer, streamer=TextStreamer(tokenizer))


def test_pipeline_decodes_generate_output(model, tokenizer):
    generator = pipeline("text_generation", model=model, tokenizer=tokenizer,
                         generation_config={"max_new_tokens": 8, "eos_token_id": []})
    ids = generate(model, [PROMPT, "the"], tokenizer=tokenizer, max_new_tokens=8, eos_token_id=[])
    assert generator(PROMPT) == tokenizer.decode(ids[0])
    assert generator([PROMPT, "the"]) == [tokenizer.decode(i) for i in ids]
    with pytest.raises(ValueError, match="text_generation"):
        pipeline("summarization", model=model, tokenizer=tokenizer)


TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_chat_template_from_tokenizer_config(tmp_path, tokenizer):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    assert load_chat_template(str(tmp_path)) == TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = apply_chat_template(messages, tokenizer, tokenizer_config=str(tmp_path))
    assert text == "<s><|system|>Be brief.</s><|user|>Hi</s><|assistant|>"
    assert apply_chat_template(messages, tokenizer, chat_template=TEMPLATE, add_generation_prompt=False) == \
        "<s><|system|>Be brief.</s><|user|>Hi</s>"


def test_chat_template_missing_is_a_clear_error(tmp_path, tokenizer):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError, match="no chat_template"):
        load_chat_template(str(tmp_path / "tokenizer_config.json"))
    with pytest.raises(ValueError, match="no chat template"):
        apply_chat_template([{"role": "user", "content": "x"}], tokenizer)


def test_run_mode_predict_writes_jsonl(model, tokenizer, tmp_path):
    from mindformers.config import load_config
    from mindformers.trainer import CausalLanguageModelingTrainer

    config = load_config("configs/llama/predict_llama_tiny.yaml",
                         {"output_dir": str(tmp_path), "load_checkpoint": "", "generation_config.max_new_tokens": 6})
    assert config.model.model_config.use_past is True
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(f"{PROMPT}\n\nthe\n")
    outputs = CausalLanguageModelingTrainer().predict(config, network=model, tokenizer=tokenizer,
                                                      inputs=[str(prompt_file)])
    expected = pipeline("text_generation", model=model, tokenizer=tokenizer,
                        generation_config={"max_new_tokens": 6})([PROMPT, "the"])
    assert outputs == expected
    lines = [json.loads(line) for line in open(tmp_path / "predict_results.jsonl", encoding="utf-8")]
    assert lines == [{"prompt": PROMPT, "output": expected[0]}, {"prompt": "the", "output": expected[1]}]
