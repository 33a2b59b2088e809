"""Pretraining datasets; importing this package registers the DATASET and DATASET_LOADER components."""
from .text_dataloader import TextDataLoader, cache_dir, split_documents
from .causal_language_model_dataset import CausalLanguageModelDataset, EpochShardSampler

__all__ = ["TextDataLoader", "CausalLanguageModelDataset", "EpochShardSampler", "cache_dir", "split_documents"]
