"""Datasets; importing this package registers the DATASET, DATASET_LOADER and DATA_HANDLER components."""
from .text_dataloader import TextDataLoader, cache_dir, split_documents
from .causal_language_model_dataset import CausalLanguageModelDataset, EpochShardSampler
from .common import CommonDataLoader
from .instruct import AlpacaInstructDataHandler
from .indexed import IndexedDataLoader, IndexedDataset, IndexedDatasetWriter
from .mindrecord import MindDataset
from .blended import BlendedDataLoader
from .hf_dataloader import HFDataLoader
from .megatron import BlendedMegatronDatasetDataLoader, GPTDataset

__all__ = ["TextDataLoader", "CausalLanguageModelDataset", "EpochShardSampler", "cache_dir", "split_documents",
           "CommonDataLoader", "AlpacaInstructDataHandler", "IndexedDataLoader", "IndexedDataset",
           "IndexedDatasetWriter", "MindDataset", "BlendedDataLoader", "HFDataLoader",
           "BlendedMegatronDatasetDataLoader", "GPTDataset"]
