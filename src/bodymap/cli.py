"""`bodymap <command> ...`: the one entry point people, DVC stages and KFP components call.

Each command lives in a module exposing `add_arguments(parser)` and `main(args, params) -> int | None`.
Modules are imported only when their command runs, so `bodymap --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bodymap.cli_options import common_options, resolve_params
from bodymap.determinism import pin_cpu_kernels
from bodymap.errors import BodymapError
from bodymap.log import setup_logging
from bodymap.remote import staged_paths

log = logging.getLogger("bodymap")

# command -> (module, one-line help). Order is the order of `bodymap --help` (pipeline order).
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("bodymap.params_cli", "check a params file against the schema, or print the defaults"),
    "template": ("bodymap.template.stage", "build the body template: charts, colour code, geodesics, LBO basis"),
    "render": ("bodymap.render.stage", "render synthetic people with exact dense GT, coco-like and video splits"),
    "cse_init": ("bodymap.cse.stage", "train CSE on the render, infer on every image set, score the baseline"),
    "pseudo_gt": ("bodymap.pseudo_gt.stage", "dense pseudo-GT on DensePose-COCO from sparse points + CSE; flow labels"),
    "pretrain": ("bodymap.train.pretrain", "train BodyMap on the rendered people with CSE inputs"),
    "finetune": ("bodymap.train.finetune", "fine-tune on DensePose-COCO: none / sparse / dense pseudo-GT"),
    "evaluate": ("bodymap.eval.stage", "score predictions: DensePose GPS/GPSm/IoU AP-AR, cm, px-window, temporal"),
    "register": ("bodymap.registry.stage", "log the fine-tuned model to MLflow; promote to champion only if better"),
    "predict": ("bodymap.predict", "correspondences for photos: colour-code PNG, vertex ids, overlay"),
    "tracking": ("bodymap.tracking_cli", "start or end the MLflow pipeline run that stage runs nest under"),
    "cluster": ("bodymap.cluster.cli", "print or submit a multi-node training job (TrainJob / PyTorchJob)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bodymap",
        description="BodyMap dense human correspondences: the pipeline stages and tools.",
        epilog="Run `bodymap <command> --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    common = common_options()
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before the command's module loads numpy, scipy and torch: they choose their CPU kernels once, and the
    # outputs depend on the choice (bodymap.determinism). Worker processes inherit the environment.
    pin_cpu_kernels()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        # s3:// inputs are fetched and s3:// outputs uploaded around the command (bodymap.remote).
        with staged_paths(argv) as local_argv:
            if local_argv is not argv:
                args = parser.parse_args(local_argv)
            own = getattr(args._module, "OWN_PARAMS", False)
            params = None if own else resolve_params(args.params, args.overrides)
            code = args._module.main(args, params)
    except BodymapError as exc:
        print(f"bodymap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bodymap {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


__all__ = ["COMMANDS", "build_parser", "main", "resolve_params"]


if __name__ == "__main__":
    sys.exit(main())
