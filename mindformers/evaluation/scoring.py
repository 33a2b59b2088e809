"""Log-likelihood of continuations and greedy answers: the two primitives benchmarks are built from.

`LogLikelihoodScorer` scores (context, continuation) pairs in fixed-shape batches (rows right-padded to the
model's seq_length, so one graph compiles once): the sum of log p(continuation tokens | everything before),
and whether greedy decoding would have produced exactly the continuation. The continuation's tokens are the
tail of the tokenized context + continuation (so a leading space joins the first word as the tokenizer would
have it); contexts that do not fit are cut from the left.
"""
import math
from typing import List, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..models.base import token_logprobs
from ..models.llama.llama import packed_positions_and_mask


class _TokenLogProbs(nn.Cell):
    """(B, L) ids -> log p(ids[:, t+1] | ids[:, :t+1]) and whether it was the argmax, both (B, L-1)."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network

    @ms.jit
    def construct(self, input_ids):
        logits = self.network.logits(input_ids[:, :-1])  # (B, L-1, V) fp32
        target = input_ids[:, 1:]
        picked, _ = token_logprobs(logits, target, ignore_index=-1)  # ids are never -1: every position scores
        greedy = ops.equal(ops.argmax(logits, -1).astype(target.dtype), target)
        return picked, greedy


class LogLikelihoodScorer:
    """Scores continuations with `network` (a causal LM with `.logits`) and `tokenizer`."""

    def __init__(self, network, tokenizer, batch_size: int = 8):
        self.network, self.tokenizer, self.batch_size = network, tokenizer, int(batch_size)
        self.length = int(network.config.seq_length) + 1
        self.cell = _TokenLogProbs(network)
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

    def score(self, pairs: Sequence[Tuple[str, str]]) -> List[Tuple[float, bool, int]]:
        """For each (context, continuation): (sum of log-probs, greedy match, continuation token count)."""
        was_training = self.network.training
        self.network.set_train(False)
        rows = [self._tokens(c, x) for c, x in pairs]
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            ids = np.full((self.batch_size, self.length), self.pad, np.int32)
            for i, (tokens, _) in enumerate(chunk):
                ids[i, :len(tokens)] = tokens
            logp, greedy = self.cell(Tensor(ids))
            logp, greedy = logp.asnumpy(), greedy.asnumpy()
            for i, (tokens, n_cont) in enumerate(chunk):
                # target position t predicts token t+1: the continuation is targets len-n_cont-1 .. len-2
                span = slice(len(tokens) - n_cont - 1, len(tokens) - 1)
                out.append((float(logp[i, span].sum()), bool(greedy[i, span].all()), n_cont))
        self.network.set_train(was_training)
        return out


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
