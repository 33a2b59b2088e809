"""Weighted mixture of data loaders, interleaved deterministically (same order on every run and every rank)."""
from typing import List, Optional, Tuple

import numpy as np

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class BlendedDataLoader:
    """Samples drawn from several loaders in proportion to their weights.

        data_loader:
          type: BlendedDataLoader
          sources:
            - {weight: 0.7, type: IndexedDataLoader, data_path: data/web_text_document}
            - {weight: 0.3, type: TextDataLoader, dataset_dir: data/books}
          size: null        # samples per epoch; default: the most for which no source repeats within an epoch

    An epoch holds round(w_i * size) samples of source i, spread evenly through the epoch (sample k of source i
    sits near (k + 1/2) / w_i). Each source is read as its own endless stream of epochs (its own shuffle), so a
    source smaller than its share wraps around rather than failing, and consecutive epochs continue each stream.
    All sources must give the same columns.
    """

    def __init__(self, sources: List[dict], size: Optional[int] = None, tokenizer=None,
                 seq_length: Optional[int] = None, seed: int = 0):
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError("BlendedDataLoader needs sources: a non-empty list of {weight, type, ...} loaders")
        weights, self.sources = [], []
        for i, spec in enumerate(sources):
            spec = dict(spec) if hasattr(spec, "keys") else None
            if spec is None or "weight" not in spec or "type" not in spec:
                raise ValueError(f"BlendedDataLoader sources[{i}] must be a mapping with weight and type")
            weight = spec.pop("weight")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise ValueError(f"BlendedDataLoader sources[{i}].weight must be a positive number, got {weight!r}")
            weights.append(float(weight))
            self.sources.append(build_from_config(spec, MindFormerModuleType.DATASET_LOADER, tokenizer=tokenizer,
                                                  seq_length=seq_length, seed=seed))
        self.weights = np.asarray(weights) / sum(weights)
        lengths = np.asarray([len(s) for s in self.sources])
        if size is None:
            size = int(min(lengths / self.weights))
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"BlendedDataLoader size must be a positive int or null, got {size!r}")
        self.size = size
        self.seq_length = seq_length
        self.dataset_dir = "BlendedDataLoader(" + ", ".join(str(getattr(s, "dataset_dir", type(s).__name__))
                                                            for s in self.sources) + ")"
        # Samples per epoch of each source: largest-remainder rounding so the counts sum to `size`.
        ideal = self.weights * size
        counts = np.floor(ideal).astype(np.int64)
        counts[np.argsort(-(ideal - counts), kind="stable")[:size - counts.sum()]] += 1
        self.counts = counts
        # Which source each position of an epoch reads: sort the ideal times of all samples.
        times = np.concatenate([(np.arange(c) + 0.5) / max(w, 1e-12) for c, w in zip(counts, self.weights)])
        owner = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
        self.schedule = owner[np.argsort(times, kind="stable")]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])  # flat index = offsets[source] + its index

    def max_token_id(self) -> int:
        """Over the sources that know theirs (pre-tokenized ones); -1 if none does."""
        return max([s.max_token_id() for s in self.sources if hasattr(s, "max_token_id")] or [-1])

    def __len__(self) -> int:
        return self.size

    def _stream(self, source: int, start: int, count: int) -> np.ndarray:
        """Indices [start, start + count) of one source's endless stream of epoch orders."""
        loader, n = self.sources[source], len(self.sources[source])
        epochs, within = np.divmod(np.arange(start, start + count, dtype=np.int64), n)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            order = loader.epoch_order(int(epoch)) if hasattr(loader, "epoch_order") else np.arange(n)
            hit = epochs == epoch
            out[hit] = np.asarray(order)[within[hit]]
        return out

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Flat indices of this epoch, in schedule order."""
        order = np.empty(self.size, dtype=np.int64)
        for source, count in enumerate(self.counts):
            picks = self._stream(source, epoch * int(count), int(count)) + self.offsets[source]
            order[self.schedule == source] = picks
        return order

    def __getitem__(self, index: int) -> Tuple[np.ndarray, ...]:
        source = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[source][int(index - self.offsets[source])]
