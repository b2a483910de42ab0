"""The body template: mesh, DensePose charts (I, U, V), colour code, symmetry, geodesics, LBO basis."""

from bodymap.template.geodesic import Geodesics
from bodymap.template.mesh import BodyTemplate

__all__ = ["BodyTemplate", "Geodesics"]
