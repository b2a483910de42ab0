"""Train the toy task with `--model-dir` an s3:// URI, through the CLI's staging (`bodymap.remote.staged_paths`), as
a stage command on a cluster pod does; with `--hang-at N`, stop making progress at step N so the test can SIGKILL
the process (usage: python store_kill_script.py MODEL_DIR_URI [--hang-at N]).

Prints the local directory the staging gave it, the first step it trained, then "hanging" or "done".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from toy_training import TOY_CONFIG, ToyData, toy_loss, toy_model

from bodymap.remote import staged_paths
from bodymap.train import train


def main() -> None:
    uri = sys.argv[1]
    hang_at = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--hang-at" else None
    first: list[int] = []

    def on_step(step: int, terms: dict) -> None:
        if not first:
            first.append(step)
            print(f"first step {step}", flush=True)
        if step == hang_at:
            print("hanging", flush=True)
            time.sleep(600)

    with staged_paths(["--model-dir", uri]) as argv:
        print(f"local {argv[1]}", flush=True)
        train(toy_model(), ToyData(), toy_loss, TOY_CONFIG, Path(argv[1]), "toy", {}, on_step=on_step)
    print("done", flush=True)


if __name__ == "__main__":
    main()
