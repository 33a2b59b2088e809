"""Leaves every layer may use (the registry, repo paths, logging, refusal messages, the output_dir lock, text-file
decoding) and, at the top, the command-line entry points (cli, preprocess_data, transform_ckpt)."""
