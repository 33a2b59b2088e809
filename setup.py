"""Install with `pip install -e .` (tests: `pip install -e ".[test]"`)."""
from setuptools import find_packages, setup

setup(
    name="mindformers",
    version="0.1.0",
    description="YAML-config-driven LLM training suite on MindSpore that runs CPU-first",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["mindformers", "mindformers.*"]),
    package_data={"mindformers": ["assets/**/*", "trainer/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "mindspore==2.10.0",
        "numpy>=1.24,<2",  # mindspore 2.10's C++ side is built against numpy 1.x
        "pyyaml>=6.0",
        "omegaconf>=2.3",
        "sentencepiece>=0.2",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "jinja2>=3.0",          # chat templates
        "tensorboardX>=2.6",    # TensorBoard summaries (tensorboard: section)
        "matplotlib>=3.7",      # the loss-curve PNG written at the end of a run
    ],
    extras_require={
        # pyarrow 20+ needs numpy 2, which mindspore 2.10 cannot run with
        # datasets: HFDataLoader's tests (pandas 2.x and pyarrow < 20 stay on numpy 1.x)
        # pytest-xdist: README's test command runs the suite on two workers
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3", "gguf>=0.10", "pyarrow>=14,<20",
                 "datasets>=4.0,<5", "pandas<3", "import-linter>=2.0"],
        # reference tools for fixture scripts and benchmarks, never runtime dependencies
        # (datasets for bench/preprocess.py; pyarrow 20+ and pandas 3 need numpy 2, which mindspore cannot run with)
        "bench": ["torch==2.13.0", "transformers>=4.45", "datasets>=2.19", "pyarrow>=14,<20", "pandas<3"],
        # GGUF import (mindformers.models.hf.gguf)
        "gguf": ["gguf>=0.10"],
        # upstream 2.x's HFDataLoader (local json/jsonl/parquet/arrow/csv through datasets.load_dataset)
        "hf": ["datasets>=4.0,<5", "pyarrow>=14,<20", "pandas<3"],
    },
    py_modules=["run_mindformer"],
    entry_points={"console_scripts": ["mindformers-run=run_mindformer:main"]},
)
