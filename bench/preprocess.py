"""Preprocessing throughput: our `preprocess_data` CLI vs HF `datasets.map` with the same fast tokenizer.

    python bench/preprocess.py                 # ~2.5M tokens; CI runs --scale 1 to keep the script working
    python bench/preprocess.py --scale 40 --workers 2

Both sides start from the same jsonl file (the shipped tiny corpus, repeated --scale times) and the same
tokenizer.json (byte-level BPE; tests/fixtures/hf_tiny_bpe_tokenizer unless --tokenizer), append EOS to every
document, use --workers workers and write their result to disk: ours a Megatron .bin/.idx pair (its workers are
threads sharing the Rust tokenizer), HF an Arrow cache (load_dataset("json") + map(batched=True,
num_proc=workers), with the tokenizers library's default threading in each process). Each run is its own
subprocess; the time is the work inside it (reading, tokenizing, writing), not interpreter start-up and
imports. The sides alternate --repeats times and each side's fastest run counts (this machine's timings vary by
+-20% run to run). A third row times our data loader serving (4, 513)-token batches from the .bin/.idx pair,
as a share of the 55M-model train step.
Needs `pip install -e ".[bench]"` (transformers, datasets); a missing package is reported in its row.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CORPUS = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "corpus.txt")
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_bpe_tokenizer")
STEP_SECONDS_55M = 2048 / 391  # docs/performance.md: 55M model, batch 4 x 512, 391 tokens/s on this CPU


def make_corpus(path: str, scale: int) -> int:
    from mindformers.dataset import split_documents
    with open(CORPUS, encoding="utf-8") as f:
        docs = split_documents(f.read())
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(scale):
            for i, doc in enumerate(docs):
                f.write(json.dumps({"id": f"{copy}-{i}", "text": doc}) + "\n")
    return len(docs) * scale


def run_ours(args, work: str) -> dict:
    from mindformers.tools.preprocess_data import build_parser, preprocess
    opts = build_parser().parse_args(["--input", args.corpus, "--output-prefix", os.path.join(work, "ours"),
                                      "--tokenizer", args.tokenizer, "--workers", str(args.workers), "--quiet"])
    stats = preprocess(opts)
    return {"seconds": stats["seconds"], "tokens": stats["tokens"], "documents": stats["documents"]}


def run_hf(args, work: str) -> dict:
    from datasets import load_dataset
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.tokenizer, "tokenizer.json"))
    with open(os.path.join(args.tokenizer, "tokenizer_config.json"), encoding="utf-8") as f:
        eos = tok.convert_tokens_to_ids(json.load(f)["eos_token"])
    start = time.perf_counter()
    cache = tempfile.mkdtemp(dir=work)  # a fresh cache per run: a warm one would skip the tokenization
    data = load_dataset("json", data_files=args.corpus, split="train", cache_dir=cache)

    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tok(batch["text"])["input_ids"]]}

    out = data.map(tokenize, batched=True, num_proc=args.workers if args.workers > 1 else None,
                   remove_columns=data.column_names)
    tokens = sum(len(ids) for ids in out["input_ids"])  # reads the Arrow cache back, as training would
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "documents": len(out)}


def run_loader(args, work: str) -> dict:
    from mindformers.dataset import CausalLanguageModelDataset
    dataset = CausalLanguageModelDataset({"data_loader": {"type": "IndexedDataLoader", "shuffle": True,
                                                          "data_path": os.path.join(work, "ours")},
                                          "batch_size": 4}, seq_length=512)
    batches = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(batches)  # pipeline start-up
    start, count = time.perf_counter(), 0
    for _ in batches:
        count += 1
        if count == 200:
            break
    per_batch = (time.perf_counter() - start) / max(count, 1)
    return {"seconds": per_batch, "batches": count}


def child(args):
    impl = args.child
    try:
        result = {"ours": run_ours, "hf": run_hf, "loader": run_loader}[impl](args, args.work)
    except ImportError as err:
        result = {"error": f"missing package ({err.name})"}
    print("RESULT " + json.dumps(result), flush=True)


def run_child(impl: str, args, work: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--work", work, "--corpus", args.corpus,
           "--tokenizer", args.tokenizer, "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "GLOG_v": "3"})  # each side keeps its own tokenizer threading
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=12, help="copies of the tiny corpus (~215k tokens each)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tokenizer", default=TOKENIZER, help="a directory with tokenizer.json")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (alternating); the fastest counts")
    p.add_argument("--child"), p.add_argument("--work"), p.add_argument("--corpus")
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as work:
        args.corpus = os.path.join(work, "corpus.jsonl")
        docs = make_corpus(args.corpus, args.scale)
        results = {}
        for _ in range(args.repeats):  # alternate the two sides; keep each one's fastest run
            for impl in ("ours", "hf", "loader"):
                row = run_child(impl, args, work)
                best = results.get(impl)
                if best is None or ("error" not in row and ("error" in best or row["seconds"] < best["seconds"])):
                    results[impl] = row
    ours, hf, loader = results["ours"], results["hf"], results["loader"]
    print(f"\n{docs} documents ({os.path.basename(args.tokenizer)}), {args.workers} worker(s), best of "
          f"{args.repeats} runs each\n")
    print(f"{'implementation':48s} {'tokens':>10s} {'seconds':>8s} {'tokens/s':>11s} {'vs HF':>7s}")
    for name, row in (("mindformers preprocess_data -> .bin/.idx", ours),
                      ("HF datasets load_dataset + map -> Arrow", hf)):
        if "error" in row:
            print(f"{name:48s} {row['error']}")
            continue
        rate = row["tokens"] / row["seconds"]
        ratio = f"{rate / (hf['tokens'] / hf['seconds']):.2f}x" if "error" not in hf else "-"
        print(f"{name:48s} {row['tokens']:>10d} {row['seconds']:>8.2f} {rate:>11,.0f} {ratio:>7s}")
    if "error" in loader:
        print(f"{'data loading':48s} {loader['error']}")
    else:
        ms_batch = loader["seconds"] * 1e3
        print(f"\ndata loading (IndexedDataLoader, batch 4 x 513, shuffled): {ms_batch:.3f} ms/batch = "
              f"{100 * loader['seconds'] / STEP_SECONDS_55M:.3f}% of a 55M train step ({STEP_SECONDS_55M:.2f} s)")
    if "error" not in ours and "error" not in hf and ours["tokens"] != hf["tokens"]:
        print(f"warning: token counts differ (ours {ours['tokens']}, HF {hf['tokens']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
