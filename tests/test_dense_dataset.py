"""The training dataset: CSE-input dropout (`augment.cse_dropout`: withheld samples, unchanged default stream) and
the synthetic images fine-tuning mixes back in (`finetune.synthetic_images`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bodymap.config import AugmentParams, CocoLocations, FinetuneParams
from bodymap.data.augment import NO_AUGMENT, augment
from bodymap.data.rendered import DenseDataset, Source, gt_ids
from bodymap.data.sets import pipeline_sets
from bodymap.models.inputs import WITHHELD_CSE
from bodymap.train.finetune import finetune_sources


def _dataset(template, rendered, cse_train, config: AugmentParams, limit: int | None = None) -> DenseDataset:
    source = Source.rendered(rendered / "train", cse_train, limit)
    return DenseDataset([source], template.symmetry, template.colors, template.chart, config)


def _samples(data: DenseDataset) -> list[dict[str, torch.Tensor]]:
    """One generator per example, keyed like the training loop's."""
    return [data.sample(i, np.random.default_rng([0, i])) for i in range(min(12, len(data)))]


def test_cse_dropout_withholds_the_estimate_and_keeps_the_rest(template, rendered, cse_train) -> None:
    flips = NO_AUGMENT.model_copy(update={"flip": 0.5})  # an augmentation that draws, to see the draws line up
    never = _samples(_dataset(template, rendered, cse_train, flips))
    always = _samples(_dataset(template, rendered, cse_train, flips.model_copy(update={"cse_dropout": 1.0})))
    some = _samples(_dataset(template, rendered, cse_train, flips.model_copy(update={"cse_dropout": 0.5})))
    for a, b in zip(never, always, strict=True):  # withholding changes the CSE input and nothing else
        assert all(torch.equal(a[k], b[k]) for k in a if k != "cse")
        assert not torch.all(a["cse"] == WITHHELD_CSE) and torch.all(b["cse"] == WITHHELD_CSE)
    assert all(s["vertex"].ge(0).any() for s in always)  # the labels stay: the sample is learnt from RGB
    withheld = [bool(torch.all(s["cse"] == WITHHELD_CSE)) for s in some]
    assert 0 < sum(withheld) < len(withheld)


def test_no_cse_dropout_draws_nothing_beyond_the_augmentations(template, rendered, cse_train) -> None:
    """At 0 the default run's generators advance exactly as the augmentations alone advance them."""
    flips = NO_AUGMENT.model_copy(update={"flip": 0.5})
    data = _dataset(template, rendered, cse_train, flips)
    sampled, augmented = np.random.default_rng(5), np.random.default_rng(5)
    data.sample(0, sampled)
    augment(data.example(0), flips, template.symmetry, augmented)
    assert sampled.bit_generator.state == augmented.bit_generator.state


def test_finetune_mixes_the_first_synthetic_images_back_in(template, rendered, cse_train) -> None:
    sets = pipeline_sets(rendered, CocoLocations())
    cse, pseudo_gt = Path("cse"), Path("pseudo_gt")
    assert len(finetune_sources(FinetuneParams(synthetic_images=0), sets, cse, pseudo_gt)) == 1  # DensePose-COCO only
    sources = finetune_sources(FinetuneParams(synthetic_images=2), sets, cse, pseudo_gt)
    assert len(sources) == 2 and sources[1].gt == rendered / "train" / "gt" and sources[1].cse == cse / "train"
    data = _dataset(template, rendered, cse_train, NO_AUGMENT, limit=2)
    assert [example_id for _, example_id in data.items] == gt_ids(rendered / "train" / "gt")[:2]
    whole = _dataset(template, rendered, cse_train, NO_AUGMENT)
    assert torch.equal(
        data.sample(1, np.random.default_rng(0))["cse"], whole.sample(1, np.random.default_rng(0))["cse"]
    )
    every = len(gt_ids(rendered / "train" / "gt"))
    # more than the render has: all of it
    assert len(_dataset(template, rendered, cse_train, NO_AUGMENT, limit=every + 5)) == every
