"""One preprocessing rule (bodymap.data.letterbox) for training, evaluation and `bodymap predict`: photo points and
maps go to the network input and back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from bodymap.data.augment import letterbox
from bodymap.data.letterbox import Letterbox

SHAPES = [(96, 96, 128), (60, 90, 128), (131, 47, 128), (480, 640, 128), (427, 640, 96), (97, 33, 33)]


@pytest.mark.parametrize(("height", "width", "size"), SHAPES)
def test_box_relative_points_round_trip_exactly(height, width, size):
    rng = np.random.default_rng(height * width)
    box = Letterbox(height, width, size)
    # DensePose points: box (x, y, w, h) inside the photo, dp on the 0..255 box grid
    x, y = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
    w, h = rng.uniform(1, width - x), rng.uniform(1, height - y)
    dp = rng.uniform(0, 255, (500, 2))
    photo = dp * [w / 255.0, h / 255.0] + [x, y]
    net = box.to_network(photo)
    assert np.all(net >= 0) and np.all(net <= size) and np.all(net[:, 0] <= width * box.scale + 1e-9)
    back = box.to_image(net)
    dp_back = (back - [x, y]) * [255.0 / w, 255.0 / h]
    assert np.abs(back - photo).max() <= 1e-12 * max(height, width)
    assert np.abs(dp_back - dp).max() <= 1e-9
    assert np.array_equal(np.floor(back), np.floor(photo))  # the same photo pixel holds every point


def _unique_labels(height, width):
    return np.arange(height * width, dtype=np.int32).reshape(height, width)


@pytest.mark.parametrize(("height", "width", "size"), SHAPES)
def test_label_maps_go_to_the_network_and_back(height, width, size):
    box = Letterbox(height, width, size)
    labels = _unique_labels(height, width)
    net = box.example_to_network({"vertex": labels})["vertex"]
    assert net.shape == (size, size)
    back = box.maps_to_image({"vertex": net})["vertex"]
    assert back.shape == (height, width)
    if box.scale >= 1:  # the network sees every photo pixel: the way back is the identity
        assert np.array_equal(back, labels)
    else:  # each photo pixel gets the label of a photo pixel within the network's pixel footprint ...
        yy, xx = np.mgrid[:height, :width]
        # ... except along the right/bottom edge, where that network pixel's centre is already in the padding
        edge = ((np.floor((xx + 0.5) * box.scale) + 0.5) / box.scale > width) | (
            (np.floor((yy + 0.5) * box.scale) + 0.5) / box.scale > height
        )
        assert np.all(back[edge] == -1) and np.all(back[~edge] >= 0)
        rows, cols = np.divmod(back[~edge], width)
        assert np.abs(rows - yy[~edge]).max() <= 1.0 / box.scale and np.abs(cols - xx[~edge]).max() <= 1.0 / box.scale
    # where the network sees a point of the photo, it sees that point's label (the points' own pixel)
    rng = np.random.default_rng(0)
    photo = rng.uniform(0, 1, (300, 2)) * [width, height]
    at_net = net[np.floor(box.to_network(photo)[:, 1]).astype(int), np.floor(box.to_network(photo)[:, 0]).astype(int)]
    photo, at_net = photo[at_net >= 0], at_net[at_net >= 0]  # (the edge strip above)
    assert len(at_net) > 250
    rows, cols = np.divmod(at_net, width)
    assert np.abs(cols + 0.5 - photo[:, 0]).max() <= 0.5 / min(box.scale, 1.0) + 0.5 + 1e-9
    assert np.abs(rows + 0.5 - photo[:, 1]).max() <= 0.5 / min(box.scale, 1.0) + 0.5 + 1e-9
    # padding (right of and below the photo) is background
    content = np.ceil(np.array([height, width]) * box.scale).astype(int)
    assert np.all(net[content[0] :] == -1) and np.all(net[:, content[1] :] == -1)


def test_training_letterbox_is_the_same_rule():
    rng = np.random.default_rng(3)
    example = {
        "image": rng.integers(0, 256, (60, 90, 3), dtype=np.uint8),
        "vertex": _unique_labels(60, 90),
        "mask": (rng.random((60, 90)) > 0.5).astype(np.float32),
    }
    ours = Letterbox(60, 90, 128).example_to_network(example)
    theirs = letterbox(example, 128)
    assert all(np.array_equal(ours[k], theirs[k]) for k in example)
    assert np.array_equal(Letterbox(60, 90, 128).image_to_network(example["image"]), ours["image"])
    # a square photo at the network size passes through untouched
    square = {"image": example["image"][:, :60], "vertex": example["vertex"][:, :60]}
    same = Letterbox(60, 60, 60).example_to_network(square)
    assert all(np.array_equal(same[k], square[k]) for k in square)
