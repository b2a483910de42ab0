"""Synthetic clothed people with exact dense ground truth (BodyMap paper Secs. 3.1, 3.6, 4).

Modules, one concern each:
    settings    the renderer's typed settings and output splits, from the `render` params section
    identity    people: Anny shapes, outfits, colours; the train/test split by identity
    poses       joint limits, natural random poses, the walk cycle, key-pose interpolation
    scene       scene sampling: people, placement, crowds, cameras, lights, degradation; video sequences
    camera      pinhole cameras: look-at, projection, per-pixel rays
    garments    garment, skirt and hair shells as one fixed-topology render mesh per identity
    appearance  procedural UV textures, skin tones, Lambert + ambient shading
    background  procedural rooms or crops of images from a folder
    renderer    batched Anny posing, Warp ray casting, crowd occlusion, dense GT, shading
    flow        exact flow between video frames from surface-point motion, with visibility
    coco        DensePose-COCO annotations: boxes, RLE, keypoints, dp_* points and dp_masks
    writer      rendering + writing one work unit (deterministic bytes)
    run         the whole dataset: workers, shards, merge, JSON and manifests
    contact     the contact sheet
    stage       `bodymap render`
"""

from bodymap.render.settings import RenderSettings, build_settings

__all__ = ["RenderSettings", "build_settings"]
