"""The shared training loop: learning, exact resume after a crash, NaN guard, schedule, DDP under torchrun."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_training import TOY_CONFIG, ToyData, toy_loss, toy_model

from bodymap.config import TrainParams
from bodymap.errors import BodymapError
from bodymap.train import load_checkpoint, save_checkpoint, train
from bodymap.train.loop import cosine_with_warmup

CONFIG = TOY_CONFIG


def test_loss_falls_and_checkpoint_holds_everything(tmp_path):
    config = TrainParams(steps=60, batch_size=8, lr=3e-2, warmup_steps=2, checkpoint_every=20, device="cpu")
    result = train(toy_model(), ToyData(), toy_loss, config, tmp_path, "toy", {"hidden": 16}, params={"a": 1})
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.3
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 60 and state["model_name"] == "toy" and state["model_args"] == {"hidden": 16}
    assert state["params"] == {"a": 1} and "optimizer" in state and "scheduler" in state


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    reference = toy_model()
    train(reference, ToyData(), toy_loss, CONFIG, tmp_path / "ref", "toy", {})

    def crash_at_6(step: int, terms: dict) -> None:
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        train(toy_model(), ToyData(), toy_loss, CONFIG, tmp_path / "run", "toy", {}, on_step=crash_at_6)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    resumed = toy_model()
    train(resumed, ToyData(), toy_loss, CONFIG, tmp_path / "run", "toy", {})
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """A real kill: the process dies with whatever it held in memory; only the atomically written checkpoint is left."""
    reference = toy_model()
    train(reference, ToyData(), toy_loss, CONFIG, tmp_path / "ref", "toy", {})
    script = [sys.executable, str(Path(__file__).with_name("kill_script.py")), str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BODYMAP_TRACKING": "0"}
    process = subprocess.Popen([*script, "--hang-at", "6"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "hanging"  # past the step-4 checkpoint, before the next
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt"]  # no half-written files
    done = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]
    resumed = load_checkpoint(tmp_path / "run" / "last.pt")
    assert resumed["step"] == 12
    for (name, a), b in zip(reference.state_dict().items(), resumed["model"].values(), strict=True):
        assert torch.equal(a, b), name


def global_rng_loss(model, batch, generator):
    """The toy loss scaled by draws from the global Python and numpy RNGs, which the loop does not reseed per step:
    only a checkpoint's restored RNG state makes a resumed run draw what the uninterrupted one drew."""
    loss, terms = toy_loss(model, batch, generator)
    return loss * (1.0 + 0.5 * random.random() + 0.5 * float(np.random.random())), terms


def test_resume_restores_the_global_rngs(tmp_path):
    random.seed(0), np.random.seed(0)
    reference = toy_model()
    train(reference, ToyData(), global_rng_loss, CONFIG, tmp_path / "ref", "toy", {})

    def crash_at_6(step: int, terms: dict) -> None:
        if step == 6:
            raise Crash

    random.seed(0), np.random.seed(0)
    with pytest.raises(Crash):
        train(toy_model(), ToyData(), global_rng_loss, CONFIG, tmp_path / "run", "toy", {}, on_step=crash_at_6)
    (saved,) = load_checkpoint(tmp_path / "run" / "last.pt")["rng"]  # one state per rank
    assert set(saved) >= {"python", "numpy", "torch"}
    resumed = toy_model()  # the global RNGs are now 6 steps in, 2 past the checkpoint
    train(resumed, ToyData(), global_rng_loss, CONFIG, tmp_path / "run", "toy", {})
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_of_another_run_and_restart_begins_again(tmp_path):
    """A checkpoint resumes only its own run: same model name and arguments, params and settings, no more steps.
    Each mismatch is one error naming the file and both values; `restart` trains from step 0 instead."""
    train(toy_model(), ToyData(), toy_loss, CONFIG, tmp_path, "toy", {"hidden": 16}, params={"lr": 1})
    path = tmp_path / "last.pt"

    def resume(**changes):
        kwargs = {"model_name": "toy", "model_args": {"hidden": 16}, "params": {"lr": 1}}
        config = CONFIG.model_copy(update=changes.pop("config", {}))
        return train(toy_model(), ToyData(), toy_loss, config, tmp_path, **{**kwargs, **changes})

    with pytest.raises(BodymapError) as error:
        resume(model_name="wide", model_args={"hidden": 32})
    message = str(error.value)
    assert message.startswith(f"{path}: cannot resume this run from it: ") and "--restart" in message
    assert "field 'model_name': 'toy' in the checkpoint, 'wide' in this run" in message
    assert 'field \'model_args\': {"hidden": 16} in the checkpoint, {"hidden": 32} in this run' in message
    with pytest.raises(BodymapError, match=r"field 'step': 12 in the checkpoint, past this run's 5 steps"):
        resume(config={"steps": 5})
    with pytest.raises(BodymapError, match=r"field 'run_hash': \w{16} in the checkpoint, \w{16} in this run"):
        resume(params={"lr": 2})
    with pytest.raises(BodymapError, match="field 'run_hash'"):
        resume(config={"lr": 0.5})
    assert load_checkpoint(path)["step"] == 12  # every refusal left the checkpoint alone
    resume(config={"log_every": 3, "checkpoint_every": 5, "workers": 0})  # how a run goes, not where: resumes

    restarted = resume(config={"steps": 5}, restart=True)
    fresh = train(toy_model(), ToyData(), toy_loss, CONFIG.model_copy(update={"steps": 5}), tmp_path / "fresh",
                  "toy", {"hidden": 16}, params={"lr": 1})  # fmt: skip
    assert load_checkpoint(path)["step"] == 5 and restarted.history == fresh.history


def test_checkpoints_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    """The file's data reaches the disk before it replaces the old checkpoint, and the rename itself after."""
    calls = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    opened = {}

    def spy_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        opened[fd] = Path(path)
        return fd

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", opened.get(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", Path(b))), real_replace(a, b))[1])
    save_checkpoint(tmp_path / "last.pt", model={}, step=1)
    (synced_file, replaced, synced_dir) = calls
    assert synced_file[0] == "fsync" and synced_file[1].name.startswith(".last.pt.")
    assert replaced == ("replace", tmp_path / "last.pt") and synced_dir == ("fsync", tmp_path)


def test_nan_guard_stops_with_a_clear_message(tmp_path):
    def nan_loss(model, batch, generator):
        return model(batch["x"]).sum() * float("nan"), {"mse": float("nan")}

    with pytest.raises(BodymapError, match="non-finite loss at step 0 .*mse=nan"):
        train(toy_model(), ToyData(), nan_loss, CONFIG, tmp_path, "toy", {})


def test_too_small_dataset_is_reported(tmp_path):
    with pytest.raises(BodymapError, match="training set too small: 64 examples for batch size 100"):
        train(
            toy_model(),
            ToyData(),
            toy_loss,
            TrainParams(steps=1, batch_size=100, lr=1e-3, warmup_steps=0),
            tmp_path,
            "toy",
            {},
        )


def test_cosine_schedule_with_warmup():
    values = [cosine_with_warmup(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in itertools.pairwise(values[10:])) and values[-1] < 0.01


def test_two_identical_runs_write_the_same_checkpoint_bytes(tmp_path):
    """torch.save names the zip's top folder after the file it writes: through a random temporary name, the same
    weights gave other bytes every run (and DVC saw a new model). The checkpoint also keeps Python's and numpy's
    global RNG states, which another process starts elsewhere (drawn from here between the runs): seeded too."""
    for run in ("a", "b"):
        random.random(), np.random.rand()
        train(toy_model(), ToyData(), toy_loss, CONFIG, tmp_path / run, "toy", {})
    assert (tmp_path / "a" / "last.pt").read_bytes() == (tmp_path / "b" / "last.pt").read_bytes()


@pytest.mark.slow
def test_ddp_two_ranks_end_with_identical_weights(tmp_path):
    script = Path(__file__).with_name("ddp_script.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    initial = toy_model().state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert not torch.equal(rank0[name], initial[name]), f"{name} did not train"


class ConvData:
    """Feature maps for a 1x1 stride-2 convolution: oneDNN splits its weight gradient by the thread count."""

    def __init__(self, n: int = 16) -> None:
        self.x = torch.randn(n, 64, 24, 24, generator=torch.Generator().manual_seed(5))

    def __len__(self) -> int:
        return len(self.x)

    def sample(self, index: int, rng) -> dict[str, torch.Tensor]:
        return {"x": self.x[index]}


def _conv_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(128, 1, 1))


def _conv_loss(model, batch, generator):
    loss = model(batch["x"]).square().mean()
    return loss, {"mse": float(loss.detach())}


def test_fixed_thread_count_gives_the_same_checkpoint_bytes_whatever_the_callers_threads(tmp_path):
    """`threads` pins torch's intra-op threads for the run: callers on 1 or 3 threads get byte-identical
    checkpoints (the weights, and the file: torch no longer names the zip after the random temporary file). On
    this project's machine, the same runs without `threads` differed in their weights between 1 and 2 threads."""
    config = TrainParams(steps=3, batch_size=4, lr=1e-2, warmup_steps=1, device="cpu", threads=2)
    before = torch.get_num_threads()
    files = []
    try:
        for caller_threads in (1, 3):
            torch.set_num_threads(caller_threads)
            out = tmp_path / f"caller{caller_threads}"
            train(_conv_model(), ConvData(), _conv_loss, config, out, "conv", {})
            assert torch.get_num_threads() == caller_threads  # restored
            files.append((out / "last.pt").read_bytes())
    finally:
        torch.set_num_threads(before)
    assert files[0] == files[1]
