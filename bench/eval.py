"""MMLU-style multiple-choice scoring speed: `MMLUMetric.evaluate` on the SmolLM2-135M shape with random weights.

    python bench/eval.py                          # 300 four-choice questions, prompts ~100-400 tokens (minutes)
    python bench/eval.py --layers 1 --items 8     # seconds; tests/bench/test_bench_eval.py runs this

The questions are synthetic csv rows in MMLU's release format (10 subjects, 0-shot), made of words from the shipped
tiny corpus and tokenized with its sentencepiece tokenizer (2048 ids; the model's 49152-row embedding is used
through those), each prompt drawn to a uniform target length in [--min-tokens, --max-tokens]. The time is the whole
`evaluate` call: reading, tokenizing, graph compiles, forward passes, per-question jsonl. Prints items/s, prompt
tokens/s, total time, peak RSS and the machine load (the machine is shared).
"""
import argparse
import csv
import os
import resource
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
CORPUS = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "corpus.txt")
SMOLLM2_135M = dict(hidden_size=576, num_layers=30, num_heads=9, n_kv_heads=3, intermediate_size=1536,
                    vocab_size=49152, tie_word_embeddings=True, seq_length=8192, max_position_embedding=8192)


def write_questions(folder: str, tokenizer, items: int, low: int, high: int, seed: int = 0) -> list:
    """MMLU-format csv files (test/<subject>_test.csv) whose 0-shot prompts have `low`..`high` tokens; returns
    the prompt lengths."""
    from mindformers.evaluation import MMLUMetric
    rng = np.random.default_rng(seed)
    words = open(CORPUS, encoding="utf-8").read().split()
    vocab = np.array(words)
    subjects = [f"subject_{i}" for i in range(10)]
    os.makedirs(os.path.join(folder, "test"), exist_ok=True)
    rows = {s: [] for s in subjects}
    lengths, metric = [], MMLUMetric(folder, num_fewshot=0)
    for i in range(items):
        subject, target = subjects[i % len(subjects)], int(rng.integers(low, high + 1))
        choices = [" ".join(rng.choice(vocab, int(rng.integers(2, 9)))) for _ in range(4)]
        n_words, best = max(4, int(target / 1.6)), None  # the corpus has ~1.6 tokens per word
        for _ in range(16):  # the closest of a few tries
            start = int(rng.integers(0, len(words) - n_words))
            row = {"question": " ".join(words[start:start + n_words]), "choices": choices, "answer": i % 4}
            length = len(tokenizer.encode(metric._prompt(subject, [], row)[0]))
            if best is None or abs(length - target) < abs(best[1] - target):
                best = row, length
            if abs(length - target) <= 4:
                break
            n_words = max(4, n_words + int((target - length) / 1.6))
        row, length = best
        rows[subject].append([row["question"], *choices, "ABCD"[row["answer"]]])
        lengths.append(length)
    for subject, lines in rows.items():
        with open(os.path.join(folder, "test", f"{subject}_test.csv"), "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(lines)
    return lengths


def time_batches() -> list:
    """(padded length, seconds) of every scoring-graph call, appended as they run."""
    from mindformers.evaluation import scoring
    calls, call = [], scoring._ScoredLogProbs.__call__

    def timed(cell, input_ids, *args):
        start = time.perf_counter()
        out = call(cell, input_ids, *args)
        out[0].asnumpy()  # wait for the result
        calls.append((input_ids.shape[1], time.perf_counter() - start))
        return out
    scoring._ScoredLogProbs.__call__ = timed
    return calls


def compile_split(calls: list, batch_size: int):
    """Seconds spent compiling (each length's first call less its later calls' median) and padded tokens/s of
    the other calls."""
    first, rest = {}, {}
    for length, seconds in calls:
        (rest.setdefault(length, []) if length in first else first.setdefault(length, [])).append(seconds)
    compile_s = sum(f[0] - float(np.median(rest.get(n, [0.0]))) for n, f in first.items())
    steady = [(n, s) for n, times in rest.items() for s in times]
    return compile_s, (sum(n for n, _ in steady) * batch_size / sum(s for _, s in steady) if steady else None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--layers", type=int, default=SMOLLM2_135M["num_layers"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-tokens", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=400)
    p.add_argument("--output-dir", default=None, help="where eval/mmlu_samples.jsonl goes (default: a temp dir)")
    args = p.parse_args()

    import logging

    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    # 30 unrolled layers exceed MindSpore's default call depth ("Exceed function call depth limit 1000")
    ms.set_recursion_limit(10000)
    from mindformers.evaluation import MMLUMetric
    from mindformers.models import LlamaConfig, LlamaForCausalLM
    from mindformers.tokenization import LlamaTokenizer
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    load_before = open("/proc/loadavg").read().split()[:3]
    tokenizer = LlamaTokenizer(vocab_file=TOKENIZER)
    ms.set_seed(0)
    network = LlamaForCausalLM(LlamaConfig(**{**SMOLLM2_135M, "num_layers": args.layers}, initializer_range=0.02))
    with tempfile.TemporaryDirectory() as tmp:
        lengths = write_questions(os.path.join(tmp, "data"), tokenizer, args.items, args.min_tokens, args.max_tokens)
        out_dir = args.output_dir or os.path.join(tmp, "out")
        metric = MMLUMetric(os.path.join(tmp, "data"), num_fewshot=0, batch_size=args.batch_size, output_dir=out_dir)
        calls = time_batches()
        start = time.perf_counter()
        result = metric.evaluate(network, tokenizer)
        seconds = time.perf_counter() - start
        with open(result["samples_file"], encoding="utf-8") as f:
            logged = sum(1 for _ in f)
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"\nMMLU-style scoring, the SmolLM2-135M shape with {args.layers} of its 30 layers "
          f"({network.num_params() / 1e6:.0f}M parameters, random weights), batch {args.batch_size}")
    print(f"questions            {result['n']} x 4 choices, prompts {min(lengths)}-{max(lengths)} tokens "
          f"(mean {np.mean(lengths):.0f})")
    print(f"total time           {seconds:.1f} s")
    print(f"items/s              {result['n'] / seconds:.2f}")
    print(f"prompt tokens/s      {sum(lengths) / seconds:.0f}")
    compile_s, steady = compile_split(calls, args.batch_size)
    print(f"graphs compiled      {len({n for n, _ in calls})} (padded lengths "
          f"{sorted({n for n, _ in calls}, reverse=True)}), about {compile_s:.0f} s compiling")
    print("forward, compiled    " + (f"{steady:.0f} padded tokens/s over the batches after each length's first"
                                       if steady else "n/a (one batch per length)"))
    print(f"peak RSS             {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"per-question jsonl   {logged} lines ({'kept in ' + out_dir if args.output_dir else 'temporary'})")
    print(f"load average         {' '.join(load_before)} before, {' '.join(load_after)} after "
          f"({os.cpu_count()} CPUs; the machine is shared)")


if __name__ == "__main__":
    main()
