"""Merge a sharded checkpoint, or re-slice it for another parallel layout.

    python -m mindformers.tools.transform_ckpt --src_checkpoint out/checkpoint/x-step100 --dst_checkpoint merged/
    python -m mindformers.tools.transform_ckpt --src_checkpoint A --dst_checkpoint B --dst_strategy new.json

The source is a directory with strategy.json and rank_<r>/model.safetensors (see
mindformers/checkpoint/sharded.py). Without --dst_strategy the result is one full model.safetensors that
load_checkpoint, --run_mode predict or save_pretrained take; with it (a file written by
`python -m mindformers.parallel --config X --save_strategy new.json`), shards for that layout.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindformers.tools.transform_ckpt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--src_checkpoint", required=True, help="sharded checkpoint directory")
    parser.add_argument("--dst_checkpoint", required=True, help="output directory")
    parser.add_argument("--dst_strategy", default=None, help="strategy file of the target layout (default: merge)")
    args = parser.parse_args(argv)
    from ..checkpoint.sharded import is_sharded, read_strategy_summary, transform_checkpoint
    from ..parallel.plan import ShardPlan

    try:
        if not is_sharded(args.src_checkpoint):
            raise ValueError(f"--src_checkpoint {args.src_checkpoint}: not a sharded checkpoint directory "
                             f"(no strategy.json in it)")
        plan = ShardPlan.load(args.dst_strategy) if args.dst_strategy else None
        out = transform_checkpoint(args.src_checkpoint, args.dst_checkpoint, plan)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = read_strategy_summary(args.src_checkpoint)
    target = "one full checkpoint" if plan is None else f"{plan.layout.device_num} shards"
    print(f"{args.src_checkpoint} ({source}) -> {os.path.abspath(out)} ({target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
