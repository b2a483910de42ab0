"""`s3://` paths on any stage command: inputs are downloaded before the stage runs, outputs uploaded after.

This is what lets a multi-node training job (every pod of it a `bodymap pretrain` with the pipeline's artifact URIs)
or a KFP step on a cluster read and write the object store while the library itself only sees local paths.
Options that name outputs are `OUTPUT_OPTIONS`; every other `s3://` value is an input. Under torchrun only rank 0
uploads; every rank downloads its own inputs.

An `s3://` `--model-dir` is also where training keeps its checkpoint while it runs: `checkpoint_store(local)`
gives the training loop the URI behind the local directory, so `last.pt` is published there every
`checkpoint_every` steps and a restarted pod (a fresh local directory) resumes from it (`bodymap.train.train`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bodymap.storage import Storage

log = logging.getLogger(__name__)

OUTPUT_OPTIONS = frozenset({"--out", "--model-dir", "--metrics", "--plots"})
MODEL_DIR_OPTION = "--model-dir"
# local model directory (resolved) -> the s3:// URI it stands for, while `staged_paths` holds it.
_CHECKPOINT_STORES: dict[Path, str] = {}


def checkpoint_store(model_dir: str | Path) -> str | None:
    """The `s3://` URI a local `--model-dir` stands for while its stage runs, or None for a plain local directory."""
    return _CHECKPOINT_STORES.get(Path(model_dir).resolve())


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or "root"


@contextlib.contextmanager
def staged_paths(argv: list[str]) -> Iterator[list[str]]:
    """Yield `argv` with every `s3://` value replaced by a local path (see the module docstring).

    Outputs are uploaded only when the block succeeds, as a directory when the stage wrote one, else as a file.
    """
    if not any(arg.startswith("s3://") for arg in argv):
        yield argv
        return
    storage = Storage()
    root = Path(tempfile.mkdtemp(prefix="bodymap-s3-"))
    local_argv, outputs = [], []
    try:
        for i, arg in enumerate(argv):
            if not arg.startswith("s3://"):
                local_argv.append(arg)
                continue
            local = root / f"{i:02d}-{_name(arg)}"
            option = argv[i - 1] if i > 0 else ""
            if option in OUTPUT_OPTIONS:
                outputs.append((local, arg))
                if option == MODEL_DIR_OPTION:
                    _CHECKPOINT_STORES[local.resolve()] = arg
            elif storage.exists(arg):
                storage.download_file(arg, local)
            else:
                storage.download_dir(arg, local)
            local_argv.append(str(local))
        yield local_argv
        if int(os.environ.get("RANK", "0")) == 0:
            for local, uri in outputs:
                # skip_identical: the checkpoint the loop already published is not uploaded twice.
                if local.is_dir():
                    storage.upload_dir(local, uri, skip_identical=True)
                elif local.exists():
                    storage.upload_file(local, uri, skip_identical=True)
                else:
                    log.warning("%s: the stage wrote nothing to upload to %s", local, uri)
    finally:
        for local, _ in outputs:
            _CHECKPOINT_STORES.pop(local.resolve(), None)
        shutil.rmtree(root, ignore_errors=True)
