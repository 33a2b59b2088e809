"""Evaluation: log-likelihood scoring, multiple-choice and generation benchmarks (registered as METRIC)."""
from .benchmarks import (BoolQMetric, CEvalMetric, GSM8KMetric, HumanEvalMetric, MMLUMetric, MultipleChoiceMetric,
                         PairwiseAccuracyMetric, PerplexityMetric, format_table, gsm8k_answer)
from .execution import pass_at_k, run_program
from .scoring import LogLikelihoodScorer

__all__ = ["BoolQMetric", "CEvalMetric", "GSM8KMetric", "HumanEvalMetric", "MMLUMetric", "MultipleChoiceMetric",
           "PairwiseAccuracyMetric", "PerplexityMetric", "LogLikelihoodScorer", "format_table", "gsm8k_answer",
           "pass_at_k", "run_program"]
