"""The shipped tiny corpus and tokenizer are what the build scripts produce."""
import os
import subprocess
import sys

import sentencepiece as spm

from mindformers.tools.paths import REPO_ROOT

ASSETS = os.path.join(REPO_ROOT, "mindformers", "assets", "tiny_corpus")


def read_documents(name):
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n\n")


def test_corpus_shape_and_split():
    corpus, held_out = read_documents("corpus.txt"), read_documents("eval.txt")
    size = os.path.getsize(os.path.join(ASSETS, "corpus.txt"))
    assert 600_000 <= size <= 900_000
    assert 0.03 <= len(held_out) / (len(corpus) + len(held_out)) <= 0.07
    assert not set(held_out) & set(corpus)
    assert len(set(corpus)) == len(corpus)
    assert all(doc.strip() == doc and doc and ">>>" not in doc for doc in corpus)


def test_tokenizer_script_reproduces_shipped_model(tmp_path):
    out = tmp_path / "tokenizer.model"
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "build_tiny_tokenizer.py"),
                    "--out", str(out)], check=True, capture_output=True, timeout=120)
    shipped = spm.SentencePieceProcessor(model_file=os.path.join(ASSETS, "tokenizer.model"))
    rebuilt = spm.SentencePieceProcessor(model_file=str(out))
    assert rebuilt.get_piece_size() == shipped.get_piece_size() == 2048
    assert [(rebuilt.id_to_piece(i), rebuilt.get_score(i)) for i in range(2048)] == \
        [(shipped.id_to_piece(i), shipped.get_score(i)) for i in range(2048)]
    assert (shipped.unk_id(), shipped.bos_id(), shipped.eos_id(), shipped.pad_id()) == (0, 1, 2, -1)
