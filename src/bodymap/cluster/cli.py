"""`bodymap cluster manifest|submit [--name NAME] -- <stage> <stage args>`: a training job for the cluster.

`manifest` prints the TrainJob / PyTorchJob that `cluster` params describe (nothing is contacted); `submit` sends it
to the cluster of the current kubeconfig (or the pod's service account), follows it and exits non-zero when it fails.
Scale with overrides: `bodymap cluster submit --set cluster.nodes=4 --set cluster.gpus_per_node=8 -- pretrain ...`.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from bodymap.cli_options import common_options, resolve_params
from bodymap.cluster.launcher import launch_training
from bodymap.cluster.manifest import build_manifest, job_name
from bodymap.errors import BodymapError

# Like `params`, each action carries the common options itself, so `--set` may follow the action name.
OWN_PARAMS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    helps = {
        "manifest": "print the training job manifest as YAML",
        "submit": "submit the training job, follow it, fail when it fails",
    }
    for action, help_text in helps.items():
        cmd = sub.add_parser(action, help=help_text, description=help_text, parents=[common_options()])
        cmd.add_argument("--name", default=None, help="job name (default: bodymap-<stage>-<random>)")
        cmd.add_argument(
            "cli_args",
            nargs=argparse.REMAINDER,
            metavar="-- STAGE ARGS",
            help="the bodymap command the job runs under torchrun, e.g. -- pretrain --out s3://bucket/run",
        )


def main(args: argparse.Namespace, params: None = None) -> int:

    cli_args = list(args.cli_args)
    if cli_args[:1] == ["--"]:
        cli_args = cli_args[1:]
    if not cli_args:
        raise BodymapError("give the command to run after --, e.g. `bodymap cluster manifest -- pretrain ...`")
    cluster = resolve_params(args.params, args.overrides).cluster
    if args.action == "manifest":
        manifest = build_manifest(cluster, args.name or job_name(cli_args[0]), cli_args)
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
        return 0
    status = launch_training(cluster, cli_args, name=args.name)
    print(status.describe())
    return 0
