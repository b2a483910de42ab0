"""The training dataset's CSE-input dropout (`augment.cse_dropout`): withheld samples, unchanged default stream."""

from __future__ import annotations

import numpy as np
import torch

from bodymap.config import AugmentParams
from bodymap.data.augment import NO_AUGMENT
from bodymap.data.rendered import DenseDataset, Source
from bodymap.models.inputs import WITHHELD_CSE


def _samples(template, rendered, cse_train, config: AugmentParams) -> list[dict[str, torch.Tensor]]:
    data = DenseDataset(
        [Source.rendered(rendered / "train", cse_train)], template.symmetry, template.colors, template.chart, config
    )
    rng = np.random.default_rng(0)
    return [data.sample(i % len(data), rng) for i in range(12)]


def test_cse_dropout_withholds_the_estimate_and_keeps_the_labels(template, rendered, cse_train) -> None:
    base = NO_AUGMENT.model_copy(update={"flip": 0.5})
    plain = _samples(template, rendered, cse_train, base)
    never = _samples(template, rendered, cse_train, base.model_copy(update={"cse_dropout": 0.0}))
    always = _samples(template, rendered, cse_train, NO_AUGMENT.model_copy(update={"cse_dropout": 1.0}))
    some = _samples(template, rendered, cse_train, NO_AUGMENT.model_copy(update={"cse_dropout": 0.5}))
    for a, b in zip(plain, never, strict=True):  # 0 draws nothing: the default run's samples stay as they were
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.all(s["cse"] == WITHHELD_CSE) for s in always)
    assert all(s["vertex"].ge(0).any() for s in always)  # the labels stay: the sample is learnt from RGB
    withheld = [bool(torch.all(s["cse"] == WITHHELD_CSE)) for s in some]
    assert 0 < sum(withheld) < len(withheld)
