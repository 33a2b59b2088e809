"""Benchmarks for `--run_mode eval` (the YAML `metric:` list), read from local files in their public formats.

Multiple choice, scored by the log-likelihood of each choice after a k-shot prompt (argmax = the answer):
  MMLUMetric         data_dir/{dev,test}/<subject>_{dev,test}.csv, rows question,A,B,C,D,answer (no header)
  CEvalMetric        data_dir/{dev,val}/<subject>_{dev,val}.csv with header id,question,A,B,C,D,answer[,...]
  BoolQMetric        a jsonl of {question, passage, answer: true/false} (or label 0/1)
  MultipleChoiceMetric  a jsonl of {question, choices: [...], answer: index or letter[, subject]}
Generation, greedy:
  GSM8KMetric        a jsonl of {question, answer: "... #### 42"}: the number after #### (else the last number)
                     of the output must equal the gold one
  HumanEvalMetric    a jsonl of {task_id, prompt, test, entry_point}: n samples per task run against the tests
                     in a subprocess (execution.py), pass@k
Every metric returns {"benchmark", "score" (the headline number), "n", "subjects" where there are several,
...} and the trainer writes it to output_dir/eval/<benchmark>.json and logs a table. Multiple-choice metrics
given `output_dir` also write each question's choice log-likelihoods, prediction and gold answer (lm-eval's
--log_samples) to output_dir/eval/<benchmark>_samples.jsonl.
"""
import abc
import csv
import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType, MindFormerRegister
from .execution import network_isolation, pass_at_k, run_program
from .scoring import LogLikelihoodScorer, score_dataset

logger = logging.getLogger("mindformers")
LETTERS = "ABCDEFGHIJ"


# ------------------------------------------------------------------------------------------------ readers
def _read_jsonl(path: str, required: Sequence[str]) -> List[dict]:
    path = resolve_repo_path(path, "metric data_path")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{line_no}: missing {missing}; each line needs {list(required)}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows


def _write_jsonl(path: str, records: List[dict]) -> str:
    """`records` one JSON object a line at `path` (folders made); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def _mc_csv(path: str, header: bool) -> List[dict]:
    """Rows of an MMLU/C-Eval csv as {question, choices, answer index}."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if header:
            next(reader, None)
        for line_no, row in enumerate(reader, 2 if header else 1):
            cells = row[1:] if header else row  # C-Eval starts with an id column
            if len(cells) < 6 or cells[5].strip() not in LETTERS[:4]:
                raise ValueError(f"{path}:{line_no}: expected question,A,B,C,D,answer with answer in A-D")
            out.append({"question": cells[0], "choices": cells[1:5], "answer": LETTERS.index(cells[5].strip())})
    return out


def _subject_files(data_dir: str, split: str, subjects: Optional[Sequence[str]]) -> Dict[str, str]:
    folder = os.path.join(resolve_repo_path(data_dir, "metric data_dir"), split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"metric data_dir {data_dir}: no '{split}' folder of <subject>_{split}.csv files")
    files = {name[:-len(f"_{split}.csv")]: os.path.join(folder, name) for name in sorted(os.listdir(folder))
             if name.endswith(f"_{split}.csv")}
    if subjects:
        unknown = sorted(set(subjects) - set(files))
        if unknown:
            raise ValueError(f"metric subjects {unknown} have no file in {folder}; there are: {', '.join(files)}")
        files = {s: files[s] for s in subjects}
    if not files:
        raise ValueError(f"{folder}: no <subject>_{split}.csv files")
    return files


# ------------------------------------------------------------------------------------------------ base
class _Benchmark:
    name = "benchmark"

    def __init__(self, num_fewshot: int = 0, max_samples: Optional[int] = None, batch_size: int = 8):
        if int(num_fewshot) < 0:
            raise ValueError(f"{type(self).__name__}.num_fewshot must be >= 0, got {num_fewshot}")
        self.num_fewshot, self.max_samples, self.batch_size = int(num_fewshot), max_samples, int(batch_size)

    def _take(self, rows: list) -> list:
        return rows[:self.max_samples] if self.max_samples else rows


def _report(name: str, per_subject: Dict[str, Tuple[int, int]], extra: Optional[dict] = None) -> dict:
    """Accuracy per subject and overall (micro average over questions)."""
    correct = sum(c for c, _ in per_subject.values())
    total = sum(n for _, n in per_subject.values())
    result = {"benchmark": name, "score": correct / total if total else 0.0, "n": total, "metric": "accuracy"}
    if len(per_subject) > 1:
        result["subjects"] = {s: {"accuracy": c / n, "n": n} for s, (c, n) in per_subject.items()}
    result.update(extra or {})
    return result


class _MultipleChoice(_Benchmark, abc.ABC):
    """Questions with choices; the choice with the highest log-likelihood is the model's answer. With
    `output_dir`, every question's choice scores go to output_dir/eval/<name>_samples.jsonl."""

    def __init__(self, num_fewshot: int = 0, output_dir: Optional[str] = None, **kwargs):
        super().__init__(num_fewshot, **kwargs)
        self.output_dir = output_dir

    @abc.abstractmethod
    def _items(self) -> Dict[str, Tuple[List[dict], List[dict]]]:
        """subject -> (few-shot examples, questions), read from the benchmark's own files."""

    def _prompt(self, subject: str, shots: List[dict], item: dict) -> Tuple[str, List[str]]:
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        body = "".join(self._question(s) + f" {LETTERS[s['answer']]}\n\n" for s in shots)
        return header + body + self._question(item), [f" {LETTERS[i]}" for i in range(len(item["choices"]))]

    @staticmethod
    def _question(item: dict) -> str:
        options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"]))
        return f"{item['question'].strip()}{options}\nAnswer:"

    def evaluate(self, network, tokenizer) -> dict:
        subjects = self._items()  # read (and check) every file before the model is touched
        questions, pairs = [], []  # every subject's pairs in one call: one length sort, few graphs
        for subject, (shots, items) in subjects.items():
            for index, item in enumerate(self._take(items)):
                context, continuations = self._prompt(subject, shots[:self.num_fewshot], item)
                questions.append((f"{subject}/{index}", subject, continuations, item["answer"], len(pairs)))
                pairs += [(context, c) for c in continuations]
        logger.info("%s: %d questions in %d subjects", self.name, len(questions), len(subjects))
        scores = LogLikelihoodScorer(network, tokenizer, self.batch_size).score(pairs)
        per_subject, samples = {}, []
        for qid, subject, continuations, gold, start in questions:
            logprobs = [s[0] for s in scores[start:start + len(continuations)]]
            prediction = int(np.argmax(logprobs))
            right, n = per_subject.get(subject, (0, 0))
            per_subject[subject] = (right + int(prediction == gold), n + 1)
            samples.append({"id": qid, "subject": subject, "choices": continuations, "logprobs": logprobs,
                            "prediction": prediction, "gold": gold, "correct": prediction == gold})
        result = _report(self.name, per_subject)
        if self.output_dir:
            result["samples_file"] = _write_jsonl(os.path.join(self.output_dir, "eval", f"{self.name}_samples.jsonl"),
                                                  samples)
            logger.info("%s: per-question choice scores in %s", self.name, result["samples_file"])
        return result


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class MMLUMetric(_MultipleChoice):
    """MMLU (Hendrycks et al. 2021) from its csv release: dev/ gives the k shots, test/ the questions."""
    name = "mmlu"

    def __init__(self, data_dir: str, subjects: Optional[List[str]] = None, num_fewshot: int = 5,
                 split: str = "test", **kwargs):
        super().__init__(num_fewshot, **kwargs)
        self.data_dir, self.subjects, self.split = data_dir, subjects, split
        self.header = False

    def _items(self):
        questions = _subject_files(self.data_dir, self.split, self.subjects)
        shots = _subject_files(self.data_dir, "dev", list(questions)) if self.num_fewshot else {}
        return {s: (_mc_csv(shots[s], self.header) if s in shots else [], _mc_csv(f, self.header))
                for s, f in questions.items()}


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class CEvalMetric(MMLUMetric):
    """C-Eval (Huang et al. 2023) from its csv release; the test split has no answers, so val is scored."""
    name = "ceval"

    def __init__(self, data_dir: str, subjects: Optional[List[str]] = None, num_fewshot: int = 5,
                 split: str = "val", **kwargs):
        super().__init__(data_dir, subjects, num_fewshot, split, **kwargs)
        self.header = True

    def _prompt(self, subject, shots, item):
        header = f"以下是中国关于{subject.replace('_', ' ')}考试的单项选择题，请选出其中的正确答案。\n\n"
        body = "".join(self._question(s) + f" {LETTERS[s['answer']]}\n\n" for s in shots)
        return header + body + self._question(item), [f" {LETTERS[i]}" for i in range(len(item["choices"]))]


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class BoolQMetric(_MultipleChoice):
    """BoolQ (Clark et al. 2019): passage, question, answer yes/no; shots are the first k lines."""
    name = "boolq"

    def __init__(self, data_path: str, num_fewshot: int = 0, **kwargs):
        super().__init__(num_fewshot, **kwargs)
        self.data_path = data_path

    def _items(self):
        rows = _read_jsonl(self.data_path, ("question", "passage"))
        items = []
        for row in rows:
            answer = row.get("answer", row.get("label"))
            if answer not in (True, False, 0, 1):
                raise ValueError(f"{self.data_path}: each line needs answer true/false (or label 0/1), got {row}")
            items.append({"question": row["question"], "passage": row["passage"], "answer": int(bool(answer)),
                          "choices": ["no", "yes"]})
        return {"boolq": (items[:self.num_fewshot], items[self.num_fewshot:])}

    def _prompt(self, subject, shots, item):
        def block(x):
            return f"{x['passage'].strip()}\nQuestion: {x['question'].strip().rstrip('?')}?\nAnswer:"
        body = "".join(block(s) + f" {s['choices'][s['answer']]}\n\n" for s in shots)
        return body + block(item), [" no", " yes"]


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class MultipleChoiceMetric(_MultipleChoice):
    """Any jsonl of {question, choices, answer (index or letter)[, subject]}; choices are scored as text."""
    name = "multiple_choice"

    def __init__(self, data_path: str, num_fewshot: int = 0, name: Optional[str] = None, **kwargs):
        super().__init__(num_fewshot, **kwargs)
        self.data_path = data_path
        self.name = name or self.name

    def _items(self):
        grouped: Dict[str, List[dict]] = {}
        for line_no, row in enumerate(_read_jsonl(self.data_path, ("question", "choices", "answer")), 1):
            answer = row["answer"]
            if isinstance(answer, str) and len(answer) == 1 and answer in LETTERS:
                answer = LETTERS.index(answer)
            if not isinstance(answer, int) or not 0 <= answer < len(row["choices"]):
                raise ValueError(f"{self.data_path}: sample {line_no}: answer {row['answer']!r} is not an index "
                                 f"or letter of its {len(row['choices'])} choices")
            grouped.setdefault(row.get("subject", self.name), []).append({**row, "answer": answer})
        return {s: (rows[:self.num_fewshot], rows[self.num_fewshot:]) for s, rows in grouped.items()}

    def _prompt(self, subject, shots, item):
        body = "".join(f"Question: {s['question'].strip()}\nAnswer: {s['choices'][s['answer']]}\n\n" for s in shots)
        return body + f"Question: {item['question'].strip()}\nAnswer:", [f" {c}" for c in item["choices"]]


# ------------------------------------------------------------------------------------------------ generation
def _generate(network, tokenizer, prompts: List[str], max_new_tokens: int, stop: List[str], **sampling):
    from ..generation import generate
    outputs = []
    for start in range(0, len(prompts), 8):
        ids = generate(network, prompts[start:start + 8], tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                       stop_strings=stop or None, **sampling)
        outputs += [tokenizer.decode(x, skip_special_tokens=True) for x in ids]
    return [_cut(text, stop) for text in outputs]


def _cut(text: str, stop: List[str]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def gsm8k_answer(text: str) -> Optional[str]:
    """The number after '####', else the last number in the text; commas and a trailing '.0' dropped."""
    tail = text.split("####")[-1] if "####" in text else text
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    value = (numbers[0] if "####" in text else numbers[-1]).replace(",", "")
    return value[:-2] if value.endswith(".0") else value


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class GSM8KMetric(_Benchmark):
    """GSM8K (Cobbe et al. 2021) exact match on the final number, k-shot from the file's first k lines."""
    name = "gsm8k"

    def __init__(self, data_path: str, num_fewshot: int = 4, max_new_tokens: int = 256, **kwargs):
        super().__init__(num_fewshot, **kwargs)
        self.data_path, self.max_new_tokens = data_path, int(max_new_tokens)

    def evaluate(self, network, tokenizer, generate_fn=None) -> dict:
        rows = _read_jsonl(self.data_path, ("question", "answer"))
        shots, items = rows[:self.num_fewshot], self._take(rows[self.num_fewshot:])
        prefix = "".join(f"Question: {s['question'].strip()}\nAnswer: {s['answer'].strip()}\n\n" for s in shots)
        prompts = [prefix + f"Question: {r['question'].strip()}\nAnswer:" for r in items]
        outputs = (generate_fn or _generate)(network, tokenizer, prompts, self.max_new_tokens, ["\n\nQuestion:"])
        correct = sum(gsm8k_answer(o) == gsm8k_answer(r["answer"]) for o, r in zip(outputs, items))
        return _report(self.name, {"gsm8k": (correct, len(items))},
                       {"metric": "exact_match", "samples": [{"question": r["question"], "output": o}
                                                             for r, o in zip(items[:5], outputs[:5])]})


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class HumanEvalMetric(_Benchmark):
    """HumanEval (Chen et al. 2021): completions run against each task's tests; unbiased pass@k."""
    name = "humaneval"
    STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]

    def __init__(self, data_path: str, num_samples: int = 1, k: Sequence[int] = (1,), temperature: float = 0.8,
                 max_new_tokens: int = 256, timeout: float = 10.0, **kwargs):
        super().__init__(0, **kwargs)
        self.data_path, self.num_samples, self.k = data_path, int(num_samples), [int(x) for x in k]
        self.temperature, self.max_new_tokens, self.timeout = float(temperature), int(max_new_tokens), float(timeout)
        if any(x > self.num_samples for x in self.k):
            raise ValueError(f"HumanEvalMetric: k {self.k} needs num_samples >= {max(self.k)}")

    def evaluate(self, network, tokenizer, generate_fn=None) -> dict:
        tasks = self._take(_read_jsonl(self.data_path, ("task_id", "prompt", "test", "entry_point")))
        sampling = {"do_sample": True, "temperature": self.temperature, "seed": 0} if self.num_samples > 1 else {}
        passed = {}
        for task in tasks:
            prompts = [task["prompt"]] * self.num_samples
            completions = (generate_fn or _generate)(network, tokenizer, prompts, self.max_new_tokens, self.STOP,
                                                     **sampling)
            results = [run_program(f"{task['prompt']}{c}\n\n{task['test']}\n\ncheck({task['entry_point']})\n",
                                   self.timeout) for c in completions]
            passed[task["task_id"]] = sum(ok for ok, _ in results)
        scores = {f"pass@{k}": float(np.mean([pass_at_k(self.num_samples, c, k) for c in passed.values()]))
                  for k in self.k}
        return {"benchmark": self.name, "score": scores[f"pass@{self.k[0]}"], "metric": f"pass@{self.k[0]}",
                "n": len(tasks), **scores, "passed_per_task": passed,
                "network_isolated": bool(network_isolation())}


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class PerplexityMetric:
    """Mean next-token loss and perplexity over eval_dataset (the default of --run_mode eval)."""
    name = "perplexity"
    needs_dataset = True

    def evaluate(self, network, tokenizer, dataset) -> dict:
        result = score_dataset(network, dataset)
        return {"benchmark": self.name, "score": result["perplexity"], "metric": "perplexity",
                "n": result["tokens"], "loss": result["loss"]}


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class PairwiseAccuracyMetric(_Benchmark):
    """Share of preference pairs ranked right: by the reward model's score when the network is one
    (`preference: {loss_type: reward}`), else by the model's own log-probability of each answer."""
    name = "pairwise_accuracy"

    def __init__(self, data_path: str, **kwargs):
        super().__init__(0, **kwargs)
        self.data_path = data_path

    def evaluate(self, network, tokenizer) -> dict:
        from mindspore import Tensor

        from ..alignment import sequence_logprobs
        from ..dataset.common import CommonDataLoader
        loader = CommonDataLoader(self.data_path, [{"type": "PairwiseDataHandler"}], tokenizer=tokenizer,
                                  seq_length=int(network.config.seq_length))
        rows = [loader[i] for i in range(len(loader))][:self.max_samples or None]
        network.set_train(False)
        right = 0
        for start in range(0, len(rows), self.batch_size):
            c_ids, c_lab, r_ids, r_lab = (Tensor(np.stack(col)) for col in zip(*rows[start:start + self.batch_size]))
            if hasattr(network, "rewards"):
                chosen, rejected = network.rewards(c_ids, c_lab), network.rewards(r_ids, r_lab)
            else:
                chosen, rejected = sequence_logprobs(network, c_ids, c_lab)[0], sequence_logprobs(network, r_ids,
                                                                                                  r_lab)[0]
            right += int((chosen.asnumpy() > rejected.asnumpy()).sum())
        return _report(self.name, {self.name: (right, len(rows))},
                       {"scored_by": "reward model" if hasattr(network, "rewards") else "log-likelihood"})


def format_table(results: List[dict]) -> str:
    """A markdown table: one row per benchmark and per subject."""
    lines = ["| benchmark | subject | metric | score | n |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['benchmark']} | overall | {r.get('metric', 'accuracy')} | {r['score']:.4f} | {r['n']} |")
        for subject, s in (r.get("subjects") or {}).items():
            lines.append(f"| {r['benchmark']} | {subject} | accuracy | {s['accuracy']:.4f} | {s['n']} |")
    return "\n".join(lines)
