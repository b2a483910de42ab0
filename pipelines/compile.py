"""`python -m pipelines.compile [--params FILE] [--set KEY=VALUE ...] [--out YAML]`: write the pipeline's IR YAML.

The committed `pipelines/bodymap_pipeline.yaml` is compiled from params.yaml (`make pipeline`); a test checks it is
up to date. Another cluster shape is another compile, e.g. `--set cluster.nodes=4 --out /tmp/bodymap-4x.yaml`.
"""

import argparse
import sys
from pathlib import Path

from kfp import compiler

from bodymap.cli import resolve_params
from bodymap.errors import BodymapError
from pipelines.pipeline import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_YAML = ROOT / "pipelines" / "bodymap_pipeline.yaml"


def compile_pipeline(params_file: Path | None, overrides: list[str], out: Path) -> Path:
    """Compile the pipeline for these params (default: params.yaml at the repo root) into `out`."""
    params = resolve_params(params_file or ROOT / "params.yaml", overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=None, help="params file (default: params.yaml of the repo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=PIPELINE_YAML, help=f"default: {PIPELINE_YAML.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    try:
        out = compile_pipeline(args.params, args.overrides, args.out)
    except BodymapError as exc:
        print(f"pipelines.compile: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
