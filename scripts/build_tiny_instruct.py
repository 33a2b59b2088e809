"""Build mindformers/assets/tiny_instruct/alpaca.json: small instruction data this repository owns.

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


if __name__ == "__main__":
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(rows(400), f, indent=0)
    print(OUT, os.path.getsize(OUT), "bytes")
