"""Check a parallel layout without devices: python -m mindformers.parallel --config X.yaml --device_num 8

Prints the mesh, the pipeline stages, each parameter's split and the per-rank parameter memory; a layout
that does not fit (heads, vocab, experts or layers not divisible, product != device_num) is a one-line
error naming the key. --save_strategy FILE writes the plan as a strategy file for checkpoint transforms.
"""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindformers.parallel", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a model YAML (its parallel_config is used)")
    parser.add_argument("--device_num", type=int, default=None,
                        help="devices of the run (default: the product of parallel_config)")
    parser.add_argument("--save_strategy", default=None, help="write the plan to this JSON strategy file")
    parser.add_argument("--options", nargs="*", default=[], help="key.path=value overrides, as run_mindformer")
    args = parser.parse_args(argv)
    from ..config import load_config, validate_config
    from ..config.loader import parse_options
    from .apply import plan_from_config  # the families are registered by mindformers/__init__.py

    try:
        config = load_config(args.config, parse_options(args.options), validate=False)
        validate_config(config, run=False)  # a planned layout, not a run: Ascend-only sizes are the point
        plan = plan_from_config(config, args.device_num)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.describe())
    if args.save_strategy:
        plan.save(args.save_strategy)
        print(f"strategy written to {args.save_strategy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
