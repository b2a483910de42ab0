"""`bodymap tracking start|end`: the MLflow parent run a whole pipeline's stage runs nest under."""

from __future__ import annotations

import argparse

from bodymap.tracking import end_pipeline_run, start_pipeline_run

OWN_PARAMS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    start = sub.add_parser(
        "start", help="create a pipeline run and print its id (export it as BODYMAP_PIPELINE_RUN_ID)"
    )
    start.add_argument("--experiment", default="bodymap")
    start.add_argument("--name", default="pipeline")
    end = sub.add_parser("end", help="mark a pipeline run finished or failed")
    end.add_argument("run_id")
    end.add_argument("--status", default="FINISHED", choices=("FINISHED", "FAILED", "KILLED"))


def main(args: argparse.Namespace, params: None = None) -> int:
    if args.action == "start":
        print(start_pipeline_run(args.experiment, args.name))
    else:
        end_pipeline_run(args.run_id, args.status)
    return 0
