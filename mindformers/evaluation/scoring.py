"""Log-likelihood of continuations and greedy answers: the two primitives benchmarks are built from.

`LogLikelihoodScorer` scores (context, continuation) pairs: the sum of log p(continuation tokens | everything
before), and whether greedy decoding would have produced exactly the continuation. The continuation's tokens are
the tail of the tokenized context + continuation (so a leading space joins the first word as the tokenizer would
have it); contexts longer than the model's seq_length are cut from the left. Pairs whose model inputs are the same
tokens (one-token choices after one prompt: " A", " B", ...) share one row; rows are sorted by length and padded
to a few lengths (batching.py), and the LM head runs only at the scored positions.
"""
import logging
import math
from typing import List, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..models.base import token_logprobs
from ..models.decoder import packed_positions_and_mask
from .batching import plan_batches
from .progress import Progress

logger = logging.getLogger("mindformers")


class _ScoredLogProbs(nn.Cell):
    """input_ids (B, L), positions (B, K), targets (B, K) -> log p(target | ids[:, :position + 1]) and whether
    the target was the argmax, both (B, K); targets of -1 are padding slots."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network

    @ms.jit
    def construct(self, input_ids, positions, targets):
        # the head at the K scored positions only: (B, K, vocab) logits, not (B, L, vocab)
        logits = self.network.logits_at(input_ids, positions)
        picked, _ = token_logprobs(logits, targets, ignore_index=-1)
        greedy = ops.equal(ops.argmax(logits, -1).astype(targets.dtype), targets)
        return picked, greedy


class LogLikelihoodScorer:
    """Scores continuations with `network` (a causal LM with `.logits`) and `tokenizer`."""

    def __init__(self, network, tokenizer, batch_size: int = 8):
        self.network, self.tokenizer, self.batch_size = network, tokenizer, int(batch_size)
        self.length = int(network.config.seq_length) + 1
        self.cell = _ScoredLogProbs(network)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _tokens(self, context: str, continuation: str) -> Tuple[List[int], int]:
        whole = self.tokenizer.encode(context + continuation)
        prefix = self.tokenizer.encode(context)
        if whole[:len(prefix)] == prefix and len(whole) > len(prefix):
            n_cont = len(whole) - len(prefix)
        else:  # the tokenizer merged across the boundary: score the continuation tokenized on its own
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            whole, n_cont = prefix + cont, len(cont)
        if n_cont >= self.length:
            raise ValueError(f"continuation of {n_cont} tokens does not fit seq_length {self.length - 1}")
        return whole[-self.length:], n_cont

    def _rows(self, pairs: Sequence[Tuple[str, str]]):
        """Distinct model inputs, the (position, target) slots scored in each, and per pair (row, first slot,
        slot count)."""
        rows, inputs, slots, owners = {}, [], [], []
        for context, continuation in pairs:
            tokens, n_cont = self._tokens(context, continuation)
            row = rows.setdefault(tuple(tokens[:-1]), len(inputs))
            if row == len(inputs):
                inputs.append(tokens[:-1])
                slots.append([])
            owners.append((row, len(slots[row]), n_cont))
            # input position p predicts token p + 1: the continuation is predicted at len - 1 - n_cont .. len - 2
            slots[row] += [(len(tokens) - 1 - n_cont + t, tokens[len(tokens) - n_cont + t]) for t in range(n_cont)]
        return inputs, slots, owners

    def score(self, pairs: Sequence[Tuple[str, str]]) -> List[Tuple[float, bool, int]]:
        """For each (context, continuation): (sum of log-probs, greedy match, continuation token count)."""
        inputs, slots, owners = self._rows(pairs)
        batches = plan_batches([len(x) for x in inputs], self.batch_size)
        width = {}  # slots per row of each padded length's graph
        for b in batches:
            width[b.length] = max([width.get(b.length, 1)] + [len(slots[r]) for r in b.rows])
        padded = sum(b.length for b in batches) * self.batch_size
        logger.info("scoring %d continuations: %d distinct prompts in %d batches of %d, padded to %s tokens "
                    "(%.0f%% padding)", len(pairs), len(inputs), len(batches), self.batch_size, sorted(width),
                    100 * (1 - sum(map(len, inputs)) / max(padded, 1)))
        pairs_in_row = np.bincount([r for r, _, _ in owners], minlength=len(inputs))
        logp, greedy = [None] * len(inputs), [None] * len(inputs)
        was_training = self.network.training
        self.network.set_train(False)
        progress, compiled = Progress(len(pairs), "scoring", "continuation"), set()
        for batch in batches:
            if batch.length not in compiled:
                compiled.add(batch.length)
                logger.info("compiling the scoring graph for %d x %d tokens", self.batch_size, batch.length)
            ids = np.full((self.batch_size, batch.length), self.pad, np.int32)
            positions = np.zeros((self.batch_size, width[batch.length]), np.int32)
            targets = np.full((self.batch_size, width[batch.length]), -1, np.int32)
            for i, r in enumerate(batch.rows):
                ids[i, :len(inputs[r])] = inputs[r]
                positions[i, :len(slots[r])], targets[i, :len(slots[r])] = zip(*slots[r])
            picked, hit = self.cell(Tensor(ids), Tensor(positions), Tensor(targets))
            picked, hit = picked.asnumpy(), hit.asnumpy()
            for i, r in enumerate(batch.rows):
                logp[r], greedy[r] = picked[i, :len(slots[r])], hit[i, :len(slots[r])]
            progress.update(int(pairs_in_row[batch.rows].sum()))
        progress.close()
        self.network.set_train(was_training)
        return [(float(logp[r][first:first + n].sum()), bool(greedy[r][first:first + n].all()), n)
                for r, first, n in owners]


def score_dataset(network, dataset) -> dict:
    """Mean next-token loss, perplexity and token count of `network` over a (B, S+1) dataset.

    Scored as training scores: targets from a `labels` column when there is one (so -100 prompt and padding
    tokens are not counted), and with a `position_ids` column (eod_reset or packed finetune data) positions
    restart and attention stays inside each document or sample."""
    columns = dataset.get_col_names()
    if "position_ids" in columns and not hasattr(network, "forward_positions"):
        raise ValueError(f"eval data has a position_ids column (eod_reset / packing) but {type(network).__name__} "
                         f"cannot take explicit positions; evaluate on data without it")
    scorer = _TokenLoss(network, int(getattr(network.config, "ignore_token_id", -100)))
    was_training = network.training
    network.set_train(False)
    total, count = 0.0, 0
    for row in dataset.create_dict_iterator(num_epochs=1):
        loss_sum, n = scorer(row["input_ids"], row.get("labels"), row.get("position_ids"))
        total += float(loss_sum.asnumpy())
        count += int(n.asnumpy())
    network.set_train(was_training)
    if count == 0:
        raise ValueError("eval_dataset produced no tokens to score")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": count}


class _TokenLoss(nn.Cell):
    """Sum of next-token cross-entropy and the number of scored tokens for a (B, S+1) batch (targets from
    `labels` when given; explicit, per-document `position_ids` when given)."""

    def __init__(self, network, ignore_index: int):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.network = network
        self.ignore_index = ignore_index

    def construct(self, input_ids, labels=None, position_ids=None):
        if position_ids is None:
            logits = self.network(input_ids[:, :-1]).astype(ms.float32)  # (B, S, V)
        else:
            positions, mask = packed_positions_and_mask(position_ids[:, :-1])
            logits = self.network.forward_positions(input_ids[:, :-1], positions, mask).astype(ms.float32)
        logp, mask = token_logprobs(logits, (input_ids if labels is None else labels)[:, 1:], self.ignore_index)
        return -logp.sum(), mask.sum()
