"""The renderer in memory: poses within limits, GT that agrees with the camera, crowd occlusion, garments, flow."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bodymap.render.appearance import sample_lighting
from bodymap.render.flow import exact_flow
from bodymap.render.identity import OutfitOdds, ShapeRanges, sample_identities
from bodymap.render.renderer import Renderer
from bodymap.render.scene import (
    CameraRanges,
    CameraSpec,
    PersonInstance,
    PoseMix,
    Scene,
    SceneStyle,
    VideoStyle,
    sample_sequence,
    sample_still,
)

SIZE = 96


@pytest.fixture(scope="module")
def renderer(template) -> Renderer:
    # Every outfit kind appears among 8 identities with these odds (skirts and robes included).
    odds = OutfitOdds(trousers=0.3, skirt=0.3, robe=0.2)
    identities, _ = sample_identities(3, 8, 0.125, 0.25, ShapeRanges(), odds)
    return Renderer(template, identities, SIZE, device="cpu")


@pytest.fixture(scope="module")
def frames(renderer):
    style = SceneStyle(max_people=3, crowd_fraction=0.3, upper_body_fraction=0.2)
    scenes = [
        sample_still(np.random.default_rng([5, i]), renderer.skeleton, list(range(8)), style, CameraRanges(), PoseMix())
        for i in range(8)
    ]
    return renderer.render_scenes(scenes)


def _neighbours(template) -> list[set[int]]:
    ring: list[set[int]] = [set() for _ in range(template.num_vertices)]
    for a, b in template.edges:
        ring[a].add(int(b))
        ring[b].add(int(a))
    return ring


def test_poses_stay_within_limits_and_rest_is_identity(renderer):
    sk = renderer.skeleton
    rng = np.random.default_rng(0)
    poses = [sk.random_pose(rng, 1.0) for _ in range(20)] + [sk.crouch_pose(rng, 1.0) for _ in range(5)]
    poses += [sk.walk_pose(p) for p in np.linspace(0, 2 * np.pi, 9)]
    for pose in poses:
        assert (pose >= sk.lo - 1e-9).all() and (pose <= sk.hi + 1e-9).all()
    rot = sk.rotations(np.zeros((1, sk.num_dofs)))
    np.testing.assert_allclose(rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-6)
    rot = sk.rotations(np.stack(poses))
    np.testing.assert_allclose(rot @ rot.transpose(0, 1, 3, 2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(sk.walk_pose(0.3), sk.walk_pose(0.3 + 2 * np.pi), atol=1e-9)  # a cycle


def test_gt_covers_the_silhouette(frames):
    for f in frames:
        fg = f.person >= 0
        assert ((f.vertex >= 0) == fg).all()
        assert (f.chart[fg] >= 1).all() and (f.chart[~fg] == 0).all()
        assert np.isin(f.layer[fg], [1, 2, 3, 4]).all() and (f.layer[~fg] == 0).all()
        assert (f.depth[fg] > 0).all()
    layers = np.concatenate([f.layer[f.person >= 0] for f in frames])
    assert (layers == 2).any() and (layers == 1).any()  # garments and skin both seen


def test_projected_gt_vertex_lands_on_itself_or_a_neighbour(renderer, frames, template):
    """A skin pixel's GT vertex, posed and projected, falls on a pixel whose GT is that vertex or a neighbour."""
    ring = _neighbours(template)
    checked = agree = 0
    for f in frames:
        for i, person in enumerate(f.people):
            rows, cols = np.nonzero((f.person == i) & (f.layer == 1))
            if len(rows) == 0:
                continue
            vertex = f.vertex[rows, cols]
            xy, _ = f.camera.project(person.template[vertex])
            px = np.floor(xy).astype(int)
            inside = (px[:, 0] >= 0) & (px[:, 0] < SIZE) & (px[:, 1] >= 0) & (px[:, 1] < SIZE)
            for v, (x, y) in zip(vertex[inside], px[inside], strict=True):
                there = f.vertex[y, x]
                checked += 1
                agree += there == v or there in ring[v] or any(there in ring[n] for n in ring[v])
    assert checked > 500
    # Misses are vertices on silhouettes or folds whose projection falls just onto another surface.
    assert agree / checked > 0.97, agree / checked


def test_nearer_person_wins_in_crowds(renderer):
    """Two people on the camera's line of sight: the nearer one owns every pixel where both project."""
    sk = renderer.skeleton
    far = PersonInstance(0, sk.walk_pose(0.5), 0.0, (0.2, -2.0), "walk")
    near = PersonInstance(1, sk.walk_pose(2.0), 10.0, (0.0, 0.0), "walk")
    camera = CameraSpec(3.0, 5.0, 0.0, 0.0, 50.0, (0.0, 0.0), target=(0.0, 0.9, 0.0))
    lighting = sample_lighting(np.random.default_rng(0), np.array([0.0, 0.0, -1.0]))
    scenes = [Scene(people, camera, lighting, 0) for people in ([far, near], [far], [near])]
    both, far_only, near_only = renderer.render_scenes(scenes)
    a, b = near_only.person >= 0, far_only.person >= 0
    assert (a & b).sum() > 100  # they do overlap in the image
    assert (both.person[a] == 1).all()  # list position 1 = the near person, even though listed second
    assert (both.person[b & ~a] == 0).all()
    assert (both.person[~a & ~b] == -1).all()
    np.testing.assert_array_equal(both.vertex[a], near_only.vertex[a])
    np.testing.assert_allclose(both.depth[a & b], np.minimum(near_only.depth, far_only.depth)[a & b])


def test_garment_and_hair_pixels_map_to_nearby_body_points(renderer, frames):
    """Shell pixels map to the body point beneath: within the shell's offset (plus a pixel) of the hit point."""
    for f in frames:
        for i, person in enumerate(f.people):
            sel = (f.person == i) & np.isin(f.layer, [2, 3])
            if not sel.any():
                continue
            rows, cols = np.nonzero(sel)
            face, bary = f.face[rows, cols], f.bary[rows, cols]
            hit = np.einsum("pk,pkd->pd", bary, person.vertices[person.mesh.faces[face]])
            body = person.template[f.vertex[rows, cols]]
            gap = np.linalg.norm(hit - body, axis=1)
            skirt = person.mesh.face_template[face][:, 0] < 0
            # Tops, trousers and hair: offsets <= 3 cm; plus ~1 cm for the nearest-corner vertex.
            assert np.percentile(gap[~skirt], 99) < 0.06 if (~skirt).any() else True
            if skirt.any():
                assert np.median(gap[skirt]) < 0.3  # the skirt hangs around the legs


def test_exact_flow_moves_gt_onto_the_next_frame(renderer, template):
    """Warping frame t's GT by the forward flow reproduces frame t+1's GT where visible (up to the pixel grid)."""
    video = VideoStyle(frames=4, max_people=2, walk_fraction=0.5)
    scenes = sample_sequence(
        np.random.default_rng(11), renderer.skeleton, list(range(8)), video, CameraRanges(), PoseMix()
    )
    frames = renderer.render_scenes(scenes)
    for a, b in itertools.pairwise(frames):
        flow, valid = exact_flow(a, b)
        assert valid.sum() > 0.5 * (a.person >= 0).sum()
        rows, cols = np.nonzero(valid)
        x = np.floor(cols + 0.5 + flow[rows, cols, 0]).astype(int)
        y = np.floor(rows + 0.5 + flow[rows, cols, 1]).astype(int)
        person = a.person[rows, cols]
        assert (b.person[y, x] == person).all()
        for i, posed in enumerate(b.people):
            # Skirt pixels are left out: their nearest body point may switch legs as the legs move (the flow of the
            # skirt surface itself is exact).
            sel = (person == i) & (posed.mesh.face_template[a.face[rows, cols], 0] >= 0)
            # Both GT vertices, posed in frame t+1 and projected, fall within a pixel or two of each other.
            was, _ = b.camera.project(posed.template[a.vertex[rows[sel], cols[sel]]])
            now, _ = b.camera.project(posed.template[b.vertex[y[sel], x[sel]]])
            gap = np.linalg.norm(was - now, axis=1)
            assert np.median(gap) < 1.0 and np.mean(gap < 2.0) > 0.97, (np.median(gap), np.mean(gap < 2.0))


def test_folder_backgrounds_are_cropped_to_the_image(tmp_path):
    import cv2

    from bodymap.render.background import Backgrounds, list_background_images
    from bodymap.render.camera import look_at

    cv2.imwrite(str(tmp_path / "room.png"), np.full((60, 80, 3), (10, 200, 30), np.uint8))
    (tmp_path / "notes.txt").write_text("not a background")
    files = list_background_images(tmp_path)
    assert [f.name for f in files] == ["room.png"]
    camera = look_at(np.array([0.0, 1.0, 3.0]), np.zeros(3), 0.0, 40.0, SIZE, SIZE)
    image = Backgrounds(files).sample(np.random.default_rng(0), camera)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 1], 200 / 255, atol=1e-3)  # RGB order kept (green stays green)
