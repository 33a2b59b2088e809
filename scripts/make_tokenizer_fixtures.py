"""Build the tiny byte-level BPE tokenizer fixture and the expected outputs of HF transformers for parity tests.

    python scripts/make_tokenizer_fixtures.py [--train]

--train retrains tests/fixtures/hf_tiny_bpe_tokenizer/ (tokenizer.json, tokenizer_config.json) with `tokenizers`
on the shipped tiny corpus; without it the committed directory is kept. Then HF transformers' AutoTokenizer
(a reference tool, never imported by mindformers or its tests) encodes/decodes/pads/renders the cases below
for the BPE directory and for the shipped sentencepiece model, and the results are written to
tests/fixtures/tokenizer_parity/*.json. Needs `pip install transformers` (the `bench` extra).
"""
import argparse
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "corpus.txt")
SP_MODEL = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
BPE_DIR = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_bpe_tokenizer")
PARITY_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer_parity")

# Qwen2's pre-tokenizer split: contractions, letter runs, single digits, punctuation runs, newlines, spaces.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS, PAD = "<|begin_of_text|>", "<|im_end|>", "<|endoftext|>"
SPECIALS = [PAD, BOS, "<|im_start|>", EOS]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
LLAMA2_CHAT = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
               "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
               "message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")

TEXTS = [
    "",
    "Return the value of the file object.",
    "  leading, inner   runs  and trailing spaces  ",
    "tabs\tand\nnew lines\n\n\nend",
    "naïve café — 日本語 ✓ 😀 Ünïcödé",
    "numbers 12345 and 3.14159, it's they'll",
    "<|im_start|>user\nhi there<|im_end|>\n",
    "text<|endoftext|>more text",
    " <|im_end|> around spaces <|begin_of_text|>",
    "<think>a step</think> done",
    "<s>the file</s> and <unk>",
    "\n",
]
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again, 日本語?"}]
LLAMA_CHAT = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."},
              {"role": "user", "content": "Again?"}]
BATCH = ["Return the value.", "x", "a longer line of text, with commas"]


def train_bpe(out_dir: str) -> None:
    """Train a Qwen2-style byte-level BPE (~800 ids) on the tiny corpus and write tokenizer(_config).json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    with open(CORPUS, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, show_progress=False, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    # A non-special added token, as Qwen3 has for <think>: kept by skip_special_tokens.
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False)])
    # bos comes from the post-processor (as in Llama 3), so whether it is added is the tokenizer.json's choice
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                      special_tokens=[(BOS, bos_id)])])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
              "pad_token": PAD, "unk_token": None, "model_max_length": 64, "padding_side": "right",
              "clean_up_tokenization_spaces": False, "chat_template": CHATML}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")


# The sentencepiece kind: the shipped model with this tokenizer_config.json (legacy=True is sentencepiece's own
# handling of text after a special token, the only mode LlamaTokenizer supports).
SP_CONFIG = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "pad_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": True,
             "padding_side": "left", "clean_up_tokenization_spaces": False, "chat_template": LLAMA2_CHAT}
# tokenizer_config.json edits tested on top of each kind; an explicit add_bos/eos_token replaces the
# tokenizer.json post-processor in HF, which is what the "add_eos" variant checks.
VARIANTS = {"bpe": {"default": {}, "add_eos": {"add_bos_token": False, "add_eos_token": True}},
            "sp": {"default": {}, "add_eos": {"add_bos_token": False, "add_eos_token": True}}}


def expected_outputs(model_dir: str, chat) -> dict:
    """What transformers' AutoTokenizer answers for every case, as plain JSON."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = {"transformers_class": type(tok).__name__, "len": len(tok),
           "special_ids": {k: getattr(tok, f"{k}_id") for k in ("bos_token", "eos_token", "pad_token",
                                                                   "unk_token")},
           "encode": [], "batch": {}, "chat": {}}
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        plain = tok(text, add_special_tokens=False)["input_ids"]
        out["encode"].append({"text": text, "ids": ids, "ids_no_special": plain,
                              "tokens": tok.convert_ids_to_tokens(plain),
                              "decode": tok.decode(ids, skip_special_tokens=False),
                              "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    for side in ("left", "right"):
        tok.padding_side = side
        enc = tok(BATCH, padding=True)
        out["batch"][f"pad_{side}"] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        enc = tok(BATCH, padding="max_length", max_length=12, truncation=True)
        out["batch"][f"max_length_{side}"] = {"input_ids": enc["input_ids"],
                                              "attention_mask": enc["attention_mask"]}
    for side in ("left", "right"):
        tok.truncation_side = side
        out["batch"][f"truncate_{side}"] = tok(BATCH, max_length=4, truncation=True)["input_ids"]
    for prompt in (True, False):
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
        ids = tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=prompt, return_dict=False)
        out["chat"][f"generation_prompt_{prompt}"] = {"text": text, "ids": list(ids)}
    return out


def write_parity(kind: str, source_dir: str, chat) -> None:
    for variant, edits in VARIANTS[kind].items():
        with tempfile.TemporaryDirectory() as tmp:
            for name in os.listdir(source_dir):
                shutil.copy(os.path.join(source_dir, name), tmp)
            config_path = os.path.join(tmp, "tokenizer_config.json")
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
            config.update(edits)
            with open(config_path, "w", encoding="utf-8") as f:
                json.dump(config, f, ensure_ascii=False)
            result = {"config_edits": edits, "chat_messages": chat, "batch_texts": BATCH,
                      **expected_outputs(tmp, chat)}
        path = os.path.join(PARITY_DIR, f"{kind}_{variant}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="retrain the BPE fixture directory first")
    args = parser.parse_args()
    if args.train or not os.path.isfile(os.path.join(BPE_DIR, "tokenizer.json")):
        train_bpe(BPE_DIR)
        print(f"wrote {BPE_DIR}")
    os.makedirs(PARITY_DIR, exist_ok=True)
    with open(os.path.join(PARITY_DIR, "sp_tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(SP_CONFIG, f, indent=2)
        f.write("\n")
    write_parity("bpe", BPE_DIR, CHAT)
    with tempfile.TemporaryDirectory() as sp_dir:
        shutil.copy(SP_MODEL, sp_dir)
        shutil.copy(os.path.join(PARITY_DIR, "sp_tokenizer_config.json"),
                    os.path.join(sp_dir, "tokenizer_config.json"))
        write_parity("sp", sp_dir, LLAMA_CHAT)


if __name__ == "__main__":
    main()
