"""Train the toy task with the real loop in this process; with `--hang-at N`, stop making progress at step N so the
test can SIGKILL the process mid-run (usage: python kill_script.py OUT_DIR [--hang-at N])."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from toy_training import TOY_CONFIG, ToyData, toy_loss, toy_model

from bodymap.train import train


def main() -> None:
    out = Path(sys.argv[1])
    hang_at = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--hang-at" else None

    def hang(step: int, terms: dict) -> None:
        if step == hang_at:
            print("hanging", flush=True)
            time.sleep(600)

    train(toy_model(), ToyData(), toy_loss, TOY_CONFIG, out, "toy", {}, on_step=hang)
    print("done", flush=True)


if __name__ == "__main__":
    main()
