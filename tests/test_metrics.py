"""seqwidgets.metrics: per-loop measures against hand-computed values; Session.metrics / diff."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import seqwidgets as sw
from seqwidgets import metrics
from seqwidgets.metrics import (
    MEASURES,
    MetricsTable,
    color_stats,
    hist_distance,
    hsv_to_rgb,
    lab_distance,
    lab_to_rgb,
    loop_metrics,
    rgb_to_hsv,
    rgb_to_lab,
    rmse,
    spread_distance,
    ssim,
)

# sRGB -> CIELAB (D65) reference values, as published colour calculators give them.
KNOWN_LAB = {
    (1.0, 1.0, 1.0): (100.0, 0.0, 0.0),
    (0.0, 0.0, 0.0): (0.0, 0.0, 0.0),
    (1.0, 0.0, 0.0): (53.2408, 80.0925, 67.2032),
    (0.0, 1.0, 0.0): (87.7347, -86.1827, 83.1793),
    (0.0, 0.0, 1.0): (32.2970, 79.1875, -107.8602),
    (0.5, 0.5, 0.5): (53.3890, 0.0, 0.0),
}


def solid(rgb, size=(8, 8)):
    return np.broadcast_to(np.asarray(rgb, dtype=np.float64), (*size, 3)).copy()


def params(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**kwargs)


unit_rgb = arrays(np.float64, (5, 3), elements=st.floats(0, 1, allow_nan=False))


@pytest.mark.parametrize(("rgb", "lab"), KNOWN_LAB.items())
def test_lab_of_known_colours(rgb, lab):
    assert rgb_to_lab(np.array(rgb)) == pytest.approx(lab, abs=2e-3)


@settings(max_examples=60, deadline=None)
@given(unit_rgb)
def test_lab_and_hsv_round_trip(rgb):
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-9)


def test_hsv_of_known_colours():
    assert rgb_to_hsv(np.array([1.0, 0.0, 0.0])).tolist() == [0.0, 1.0, 1.0]
    assert rgb_to_hsv(np.array([0.0, 0.0, 0.5])) == pytest.approx([2 / 3, 1.0, 0.5])
    assert rgb_to_hsv(np.array([0.25, 0.25, 0.25])).tolist() == [0.0, 0.0, 0.25]


def test_a_known_colour_shift_gives_its_lab_delta():
    black, gray, red = (color_stats(solid(c)) for c in ((0, 0, 0), (0.5, 0.5, 0.5), (1, 0, 0)))
    assert lab_distance(black, gray) == pytest.approx(53.389, abs=2e-3)  # lightness only
    expected = math.dist(KNOWN_LAB[(0.5, 0.5, 0.5)], KNOWN_LAB[(1.0, 0.0, 0.0)])
    assert lab_distance(gray, red) == pytest.approx(expected, abs=2e-3)
    # Uniform images have no spread, so only the mean moved.
    assert spread_distance(gray, red) == pytest.approx(0.0, abs=1e-9)


def test_spread_contrast_and_saturation_by_hand():
    half = solid((0, 0, 0))
    half[:, 4:] = 1.0  # half black, half white: L* is 0 or 100, std exactly 50
    stats = color_stats(half)
    assert stats.lab_std[0] == pytest.approx(50.0, abs=1e-4)
    assert spread_distance(stats, color_stats(solid((0.5, 0.5, 0.5)))) == pytest.approx(50.0, 1e-4)
    row = loop_metrics(half, loop=0, keyframe=0, first=stats, key=stats)
    assert row["contrast"] == pytest.approx(50.0, abs=1e-4)
    assert row["saturation"] == 0.0
    assert color_stats(solid((1, 0, 0))).saturation == 1.0
    assert color_stats(solid((0.5, 0.25, 0.25))).saturation == pytest.approx(0.5)


def test_histogram_distance_is_zero_for_same_and_one_for_disjoint_channels():
    black, white = color_stats(solid((0, 0, 0))), color_stats(solid((1, 1, 1)))
    assert hist_distance(black, black) == 0.0
    # L* is disjoint, a* and b* are both neutral: (1 + 0 + 0) / 3.
    assert hist_distance(black, white) == pytest.approx(1 / 3)
    assert 0 < hist_distance(black, color_stats(solid((1, 0, 0)))) <= 1


def test_identical_frames_show_no_change_and_no_drift():
    rng = np.random.default_rng(0)
    image = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    stats = color_stats(image)
    row = loop_metrics(image, loop=3, keyframe=0, first=stats, key=stats, previous=image.copy())
    for name in ("drift_lab", "drift_spread", "drift_hist", "key_drift_lab", "change_rmse"):
        assert row[name] == 0.0, name
    assert row["change_ssim"] == pytest.approx(1.0)
    assert set(row) == {"loop", "keyframe", *MEASURES}


def test_change_measures_by_hand():
    black, gray = solid((0, 0, 0)), solid((0.5, 0.5, 0.5))
    assert rmse(black, gray) == pytest.approx(0.5)
    # Two flat images: no variance, so SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    m1, m2, c1 = 0.0, 53.389 / 100, 0.01**2
    assert ssim(black, gray) == pytest.approx((2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1), rel=1e-4)
    rng = np.random.default_rng(1)
    texture = rng.random((32, 32, 3))
    assert ssim(texture, np.clip(texture + rng.normal(0, 0.2, texture.shape), 0, 1)) < 0.9
    with pytest.raises(ValueError, match="one size"):
        rmse(black, solid((0, 0, 0), size=(4, 4)))


def test_loop_zero_has_no_change_and_latent_norm_is_rms():
    import torch

    image = solid((0.2, 0.4, 0.6))
    stats = color_stats(image)
    row = loop_metrics(
        image, loop=0, keyframe=0, first=stats, key=stats, latent=torch.full((4, 2, 2), 2.0)
    )
    assert math.isnan(row["change_rmse"]) and math.isnan(row["change_ssim"])
    assert row["latent_rms"] == pytest.approx(2.0)


def test_bad_images_name_the_problem():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        color_stats(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        color_stats(np.full((2, 2, 3), 2.0))


def test_every_measure_is_documented_in_one_line():
    for name, measure in MEASURES.items():
        for text in (measure.label, measure.help, measure.teacher):
            assert text and "\n" not in text, name


def test_metrics_table_columns():
    table = MetricsTable([{"loop": 0, "L": 1.0}, {"loop": 1, "L": 2.0}])
    assert table.column("L") == [1.0, 2.0]
    with pytest.raises(ValueError, match="'nope' is unknown"):
        table.column("nope")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            table.to_pandas()
    else:
        assert list(table.to_pandas().index) == [0, 1]


# -- Session.metrics / Session.diff ------------------------------------------------------------


@pytest.fixture
def session(tiny_pipe):
    return sw.Session(tiny_pipe)


def test_session_metrics_one_row_per_loop_with_keyframes(session):
    run = session.run(params(positive_seq="0: a\n2: b", steps=2, sequence_loop_count=4))
    table = session.metrics(run)
    assert [row["loop"] for row in table] == [0, 1, 2, 3]
    assert [row["keyframe"] for row in table] == [0, 0, 2, 2]
    assert table[0]["drift_lab"] == 0.0 and math.isnan(table[0]["change_rmse"])
    assert table[2]["key_drift_lab"] == 0.0  # the keyframe's first loop is its own reference
    # Loop 3 against its keyframe start is what the hand computation over the images gives.
    images = [np.asarray(session.image(run, i)) for i in range(4)]
    expected = lab_distance(color_stats(images[3]), color_stats(images[2]))
    assert table[3]["key_drift_lab"] == pytest.approx(expected)
    assert table[3]["change_rmse"] == pytest.approx(rmse(images[3], images[2]))
    assert len(session.metrics(run, upto=1)) == 2


def test_session_metrics_cost_no_decode_beyond_the_thumbnails(session, record):
    run = session.run(params(steps=2, sequence_loop_count=3, positive_seq="0: a"))
    for i in run.indices:
        session.thumbnail(run, i, 32)
    decodes = record(session.pipe.vae.decoder)
    first = session.metrics(run)
    assert len(decodes) == 0
    again = session.metrics(run)
    assert all(a is b for a, b in zip(first, again, strict=True))  # cached per frame


def test_branches_share_the_rows_of_their_shared_loops(session):
    run = session.run(params(steps=2, sequence_loop_count=4, positive_seq="0: a"))
    child = session.branch((run, 1), cfg=2.0)
    ours, theirs = session.metrics(run), session.metrics(child)
    assert ours[0] is theirs[0] and ours[1] is theirs[1]
    assert theirs[2]["change_rmse"] == pytest.approx(
        rmse(session.image(child, 2), session.image(child, 1))
    )


def test_diff_pairs_frames_and_lists_changed_settings(session):
    run = session.run(params(steps=2, sequence_loop_count=4, positive_seq="0: a"))
    alt = session.branch((run, 1), cfg=3.0, seed=5)
    diff = session.diff(run, alt)
    assert diff.settings == {"cfg": (8.0, 3.0), "seed": (0, 5)}
    assert [pair.index for pair in diff.pairs] == [0, 1, 2, 3]
    assert [pair.shared for pair in diff.pairs] == [True, True, False, False]
    assert diff.parted_at == 2
    shared, parted = diff.pairs[0], diff.pairs[3]
    assert not shared.difference().any() and shared.rmse() == 0.0
    image_a, image_b = parted.images()
    heat = parted.difference()
    assert heat.shape == (image_a.height, image_a.width)
    expected = np.abs(metrics.as_rgb(image_a) - metrics.as_rgb(image_b)).mean(axis=-1)
    np.testing.assert_allclose(heat, expected)
    assert parted.rmse() > 0
    assert session.diff(run, run).settings == {} and session.diff(run, run).parted_at is None
