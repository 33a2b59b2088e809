"""Build mindformers/assets/tiny_instruct/{alpaca,sharegpt}.json: small instruction data this repository owns.

    python scripts/build_tiny_instruct.py

Programmatic tasks a tiny model can learn on a CPU in minutes (word reversal, repetition, sums of small
numbers, first/last word), in the alpaca layout {instruction, input, output}; seeded, so the file is
reproducible.
"""
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "mindformers", "assets", "tiny_instruct", "alpaca.json")
SHAREGPT = os.path.join(ROOT, "mindformers", "assets", "tiny_instruct", "sharegpt.json")
PAIRWISE = os.path.join(ROOT, "mindformers", "assets", "tiny_instruct", "pairwise.jsonl")
WORDS = ("file path name value list string number line time data object module error class method "
         "function return result type key index table").split()


def rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS, rng.randint(2, 4))
        kind = i % 5
        if kind == 0:
            out.append({"instruction": "Reverse the order of the words.", "input": " ".join(words),
                        "output": " ".join(reversed(words))})
        elif kind == 1:
            out.append({"instruction": "Repeat the text.", "input": " ".join(words), "output": " ".join(words)})
        elif kind == 2:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": str(a + b)})
        elif kind == 3:
            out.append({"instruction": "Give the first word.", "input": " ".join(words), "output": words[0]})
        else:
            out.append({"instruction": "Give the last word.", "input": " ".join(words), "output": words[-1]})
    return out


def conversations(n: int, seed: int = 1):
    """Multi-turn sharegpt conversations: two or three of the tasks above in a row, sometimes with a system turn."""
    rng = random.Random(seed)
    tasks = rows(3 * n, seed)
    out = []
    for i in range(n):
        turns = [{"from": "system", "value": "Answer with the result only."}] if i % 3 == 0 else []
        for task in tasks[3 * i:3 * i + rng.randint(2, 3)]:
            question = task["instruction"] + (f" {task['input']}" if task["input"] else "")
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": task["output"]}]
        out.append({"conversations": turns})
    return out


def pairs(n: int, seed: int = 2):
    """Preference pairs {prompt, chosen, rejected}: the right sum or word order against a wrong one."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS[:12], 3)
        if i % 2:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            out.append({"prompt": f"What is {a} plus {b}?", "chosen": str(a + b),
                        "rejected": str((a + b + rng.randint(1, 5)) % 19)})
        else:
            out.append({"prompt": f"Reverse the order of the words. {' '.join(words)}",
                        "chosen": " ".join(reversed(words)), "rejected": " ".join(words)})
    return out


if __name__ == "__main__":
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    for path, data in ((OUT, rows(400)), (SHAREGPT, conversations(150))):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=0)
        print(path, os.path.getsize(path), "bytes")
    with open(PAIRWISE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in pairs(200))
    print(PAIRWISE, os.path.getsize(PAIRWISE), "bytes")
