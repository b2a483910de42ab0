"""BodyMap networks (appearance + correspondence transformers, DPT decoder) and the Table 5 baselines, by name.

model = create_model("bodymap_vit")            # or build_model(params.pretrain.model)
out = model(image, cse_input(cse_vertex, cse_score, colors))
vertex, score = decode_vertices(out, template)
"""

from bodymap.models.base import BodyMapNet, BodyMapOutput
from bodymap.models.decode import add_decoded, decode_vertices
from bodymap.models.inputs import cse_input
from bodymap.models.registry import (
    DEFAULT_MODEL,
    MODELS,
    build_model,
    create_model,
    list_models,
    model_args,
    params_overrides,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "BodyMapNet",
    "BodyMapOutput",
    "add_decoded",
    "build_model",
    "create_model",
    "cse_input",
    "decode_vertices",
    "list_models",
    "model_args",
    "params_overrides",
]
