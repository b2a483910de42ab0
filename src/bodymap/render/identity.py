"""People: Anny shapes, outfits and colours, sampled once per run and split into train/test by identity.

An identity is everything that stays fixed for one synthetic person across images: body shape, skin tone, outfit
geometry (which garment shells, how long, how loose), garment materials and hair. Paper Sec. 3.1: identities come
from the body model's shape space; test identities never appear in training images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Anny's phenotypes (as bodymap.template.anny_body.PHENOTYPES, repeated to keep torch out of this import).
PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
# Skin albedos from light to dark (linear-ish RGB 0..1); a tone is drawn between two neighbours.
SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.90, 0.72, 0.58],
        [0.80, 0.60, 0.46],
        [0.66, 0.46, 0.33],
        [0.50, 0.33, 0.22],
        [0.34, 0.22, 0.15],
    ]
)
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14], [0.70, 0.55, 0.32], [0.55, 0.20, 0.08], [0.6] * 3]
)
PATTERNS = ("solid", "stripes", "checks", "noise")


@dataclass(frozen=True)
class ShapeRanges:
    """Ranges [lo, hi] (Anny units in [0, 1]) of each phenotype; Anny's age 1/3 is a child, 2/3 a young adult."""

    gender: tuple[float, float] = (0.0, 1.0)
    age: tuple[float, float] = (0.4, 1.0)
    muscle: tuple[float, float] = (0.1, 0.9)
    weight: tuple[float, float] = (0.1, 0.9)
    height: tuple[float, float] = (0.1, 0.9)
    proportions: tuple[float, float] = (0.2, 0.8)


@dataclass(frozen=True)
class OutfitOdds:
    """Probabilities of each garment. `trousers + skirt + robe` <= 1; the rest of the time the person wears shorts."""

    top: float = 0.85
    loose_top: float = 0.4
    long_sleeves: float = 0.5
    trousers: float = 0.55
    skirt: float = 0.2
    robe: float = 0.1
    hair: float = 0.85


@dataclass(frozen=True)
class Material:
    """A procedural texture in UV space: `pattern` mixes `color_a` and `color_b` (RGB 0..1)."""

    pattern: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    frequency: float  # stripes/checks per UV unit
    angle: float  # stripe direction, radians
    seed: int  # noise pattern


@dataclass(frozen=True)
class Outfit:
    """Garment geometry of one identity (lengths in metres in the rest pose; offsets in metres off the skin)."""

    top: str  # none | tight | loose
    sleeve_m: float  # sleeve length from the shoulder joint (0: sleeveless)
    top_hem_m: float  # hem height above the hip joints (negative: below)
    top_offset_m: float
    bottom: str  # shorts | trousers | skirt | robe
    leg_fraction: float  # trouser/shorts length as a fraction of hip-to-ankle
    skirt_fraction: float  # skirt/robe length as a fraction of hip-to-ankle
    bottom_offset_m: float
    skirt_flare: float  # extra radius per metre of skirt length
    hair: str  # none | short | long
    hair_offset_m: float


@dataclass(frozen=True)
class Identity:
    index: int
    shape: dict[str, float]
    skin: tuple[float, float, float]
    outfit: Outfit
    top_material: Material
    bottom_material: Material
    hair_color: tuple[float, float, float]

    def record(self) -> dict:
        """JSON-ready description for the manifest."""
        return asdict(self)


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    # Garment colours: mostly muted, sometimes saturated; HSV drawn then converted.
    import colorsys

    h, s, v = rng.random(), rng.choice([rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.9)]), rng.uniform(0.15, 0.95)
    return tuple(round(float(c), 4) for c in colorsys.hsv_to_rgb(h, s, v))


def sample_material(rng: np.random.Generator) -> Material:
    return Material(
        pattern=str(rng.choice(PATTERNS, p=[0.4, 0.25, 0.15, 0.2])),
        color_a=_colour(rng),
        color_b=_colour(rng),
        frequency=float(rng.uniform(3.0, 14.0)),
        angle=float(rng.uniform(0.0, np.pi)),
        seed=int(rng.integers(2**31)),
    )


def sample_identity(rng: np.random.Generator, index: int, shapes: ShapeRanges, odds: OutfitOdds) -> Identity:
    """One person: shape from `shapes`, outfit from `odds`, colours at random."""
    shape = {name: round(float(rng.uniform(*getattr(shapes, name))), 4) for name in PHENOTYPES}
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(np.floor(tone))
    hi = min(lo + 1, len(SKIN_TONES) - 1)
    skin = SKIN_TONES[lo] * (1 - (tone - lo)) + SKIN_TONES[hi] * (tone - lo)
    r = rng.random()
    bottom = (
        "trousers"
        if r < odds.trousers
        else "skirt"
        if r < odds.trousers + odds.skirt
        else "robe"
        if r < odds.trousers + odds.skirt + odds.robe
        else "shorts"
    )
    top = "none"
    # Bare torsos only on adult, male-leaning bodies (Anny gender 0 = male, 1 = female; age 2/3 = young adult).
    bare_allowed = shape["gender"] < 0.5 and shape["age"] > 0.55
    if rng.random() < odds.top or bottom == "robe" or not bare_allowed:
        top = "loose" if rng.random() < odds.loose_top or bottom == "robe" else "tight"
    long_sleeves = rng.random() < odds.long_sleeves or bottom == "robe"
    hair = "none"
    if rng.random() < odds.hair:
        hair = "long" if rng.random() < 0.4 else "short"
    bottom_offset = rng.uniform(0.004, 0.012) if bottom in ("trousers", "shorts") else rng.uniform(0.004, 0.008)
    top_offset = rng.uniform(0.003, 0.007) if top == "tight" else rng.uniform(0.012, 0.03)
    outfit = Outfit(
        top=top,
        sleeve_m=round(float(rng.uniform(0.5, 0.62) if long_sleeves else rng.uniform(0.0, 0.2)), 4),
        top_hem_m=round(float(rng.uniform(-0.08, 0.12)), 4),
        # The top lies over the waistband: at least 3 mm outside the bottom shell where both exist.
        top_offset_m=round(float(max(top_offset, bottom_offset + 0.003)), 4),
        bottom=bottom,
        leg_fraction=round(float(rng.uniform(0.85, 1.0) if bottom == "trousers" else rng.uniform(0.15, 0.45)), 4),
        skirt_fraction=round(float(rng.uniform(0.9, 1.0) if bottom == "robe" else rng.uniform(0.3, 0.75)), 4),
        bottom_offset_m=round(float(bottom_offset), 4),
        skirt_flare=round(float(rng.uniform(0.05, 0.35)), 4),
        hair=hair,
        hair_offset_m=round(float(rng.uniform(0.008, 0.02) if hair == "short" else rng.uniform(0.012, 0.03)), 4),
    )
    hair_tone = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
    return Identity(
        index=index,
        shape=shape,
        skin=tuple(round(float(c), 4) for c in skin),
        outfit=outfit,
        top_material=sample_material(rng),
        bottom_material=sample_material(rng),
        hair_color=tuple(round(float(c), 4) for c in np.clip(hair_tone, 0, 1)),
    )


def sample_identities(
    seed: int, count: int, val_fraction: float, test_fraction: float, shapes: ShapeRanges, odds: OutfitOdds
) -> tuple[list[Identity], dict[str, list[int]]]:
    """All identities of a run, and their split into disjoint train / val / test pools.

    Returns:
        (identities, {"train", "val", "test"} -> sorted identity indices); at least one identity in each pool when
        count >= 3 (val is empty below that).
    """
    rng = np.random.default_rng([seed, 0xB0D1])
    people = [sample_identity(rng, i, shapes, odds) for i in range(count)]
    n_test = min(max(1, round(count * test_fraction)), count - 1) if count >= 2 else 0
    n_val = min(max(1, round(count * val_fraction)), count - n_test - 1) if count >= 3 else 0
    order = rng.permutation(count)
    pools = {
        "train": order[n_test + n_val :],
        "val": order[n_test : n_test + n_val],
        "test": order[:n_test],
    }
    return people, {name: sorted(int(i) for i in pool) for name, pool in pools.items()}


__all__ = ["Identity", "Material", "Outfit", "OutfitOdds", "ShapeRanges", "sample_identities", "sample_identity"]
