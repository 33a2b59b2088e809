"""Train the shipped tiny sentencepiece tokenizer (Llama-2 style BPE, 2048 pieces) on the tiny corpus.

    python scripts/build_tiny_tokenizer.py [--corpus mindformers/assets/tiny_corpus/corpus.txt]
                                           [--out mindformers/assets/tiny_corpus/tokenizer.model]

Training is single-threaded and reads the corpus through an iterator (so the input path is not recorded in
the model), which makes the output byte-for-byte reproducible for a given sentencepiece version.
"""
import argparse
import io
import os

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
ASSET_DIR = os.path.join(os.path.dirname(HERE), "mindformers", "assets", "tiny_corpus")

# The Llama-2 tokenizer's settings: BPE with byte fallback, digits split, no normalization, whitespace kept,
# <unk>/<s>/</s> at ids 0/1/2 and no pad piece.
TRAINER_ARGS = dict(
    model_type="bpe",
    vocab_size=2048,
    character_coverage=0.99995,
    byte_fallback=True,
    split_digits=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    max_sentence_length=16384,    # corpus lines are whole reflowed paragraphs
    shuffle_input_sentence=False,
    num_threads=1,
    minloglevel=2,
)


def train(corpus: str, out: str) -> None:
    """Train on `corpus` (one paragraph per line, blank lines between documents) and write the model to `out`."""
    with open(corpus, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **TRAINER_ARGS)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(model.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.path.join(ASSET_DIR, "corpus.txt"))
    parser.add_argument("--out", default=os.path.join(ASSET_DIR, "tokenizer.model"))
    args = parser.parse_args()
    train(args.corpus, args.out)
    sp = spm.SentencePieceProcessor(model_file=args.out)
    print(f"wrote {args.out}: {sp.get_piece_size()} pieces, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
