"""seqwidgets.plots: every figure renders to PNG under Agg and plots the values of the plan."""

import io
import math
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from seqwidgets import plots
from seqwidgets.choices import SCHEDULERS
from seqwidgets.params import SequenceParams
from seqwidgets.plan import plan_sequence, seed_sequence
from seqwidgets.schedules import ModelSampling, calculate_sigmas, loop_sigmas

SD15 = ModelSampling.from_config(plots.SD15_SCHEDULE)
KEYFRAMES = "0: a red circle\n4: a blue square\n8: a green triangle"


def make_params(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SequenceParams(**kwargs)


def render(fig) -> Image.Image:
    """Draw the figure to PNG bytes with the Agg canvas and read the PNG back."""
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.width > 100 and image.height > 100
    return image


def solid_lines(ax):
    return [line for line in ax.lines if line.get_linestyle() == "-"]


def test_figures_stay_out_of_pyplot_state():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    render(plots.plot_interpolation_norms(dim=64, points=5))
    # Built without pyplot: nothing to close, nothing shown twice in Jupyter, no GUI backend.
    assert plt.get_fignums() == before


# -- sigma slices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("loops", "denoise_seq"), [(5, 0.5), (3, 0.3), (12, 1.0)])
def test_sigma_slices_draw_each_loop_slice_of_the_plan(loops, denoise_seq):
    params = make_params(steps=6, sequence_loop_count=loops, denoise_seq=denoise_seq)
    fig = plots.plot_sigma_slices(params, SD15, max_loops=8)
    render(fig)
    curve, run = fig.axes
    loop_lines = [line for line in run.lines if line.get_label().startswith("loop ")]
    assert len(loop_lines) == min(loops, 8)
    for line, plan in zip(loop_lines, plan_sequence(params, SD15), strict=False):
        assert line.get_label() == f"loop {plan.index}"
        np.testing.assert_array_equal(line.get_ydata(), plan.sigmas.numpy())
    # Teeth follow each other: each starts right after the previous ended.
    starts = [line.get_xdata()[0] for line in loop_lines]
    assert starts == [i * (params.steps + 1) for i in range(len(loop_lines))]
    assert "sigma" in run.get_ylabel() and "step" in run.get_xlabel()
    assert "timestep" in curve.get_xlabel()


def test_sigma_slices_left_panel_puts_both_slices_on_the_model_curve():
    params = make_params(steps=10, sequence_loop_count=4, denoise_start=1.0, denoise_seq=0.5)
    fig = plots.plot_sigma_slices(params)  # no model: Stable Diffusion 1.5's schedule
    curve = fig.axes[0]
    model_curve, loop0, later = curve.lines
    np.testing.assert_array_equal(model_curve.get_ydata(), SD15.sigmas.numpy())
    full = loop_sigmas(SD15, "normal", "euler", 10, 1.0)[:-1].numpy()
    tail = calculate_sigmas(SD15, "normal", 20)[-11:-1].numpy()  # int(10 / 0.5) = 20 steps
    np.testing.assert_array_equal(loop0.get_ydata(), full)
    np.testing.assert_array_equal(later.get_ydata(), tail)
    assert len(loop0.get_ydata()) == len(later.get_ydata()) == 10  # same steps, lower start
    assert loop0.get_xdata()[0] == 999
    assert "denoise 0.5" in later.get_label()


def test_sigma_slices_accept_a_pipeline(tiny_pipe):
    params = make_params(steps=3, sequence_loop_count=2)
    render(plots.plot_sigma_slices(params, tiny_pipe))


# -- schedulers ------------------------------------------------------------------------------------


def test_schedulers_one_line_per_scheduler_with_its_sigmas():
    fig = plots.plot_schedulers(SD15, steps=12)
    render(fig)
    (ax,) = fig.axes
    assert [line.get_label().split(" ")[0] for line in ax.lines] == list(SCHEDULERS)
    # sgm_uniform and simple nearly coincide on SD 1.5's schedule: the legend says so.
    assert ax.lines[SCHEDULERS.index("simple")].get_label() == "simple (≈ sgm_uniform)"
    for line, name in zip(ax.lines, SCHEDULERS, strict=True):
        np.testing.assert_allclose(line.get_ydata(), calculate_sigmas(SD15, name, 12)[:-1])
    assert ax.get_yscale() == "log"
    assert "sigma" in ax.get_ylabel()


# -- seeds -----------------------------------------------------------------------------------------


def test_seed_sequence_one_panel_per_settings_with_the_node_seeds():
    settings = [
        make_params(seed=5, seed_mode_seq="increment", sequence_loop_count=8),
        make_params(seed=0, seed_mode_seq="increment", sequence_loop_count=8),
        make_params(seed=0, seed_mode_seq="decrement", alternate_values=False),
        make_params(seed=5, seed_mode_seq="random", sequence_loop_count=6),
    ]
    fig = plots.plot_seed_sequence(settings)
    render(fig)
    assert len(fig.axes) == 4
    first = fig.axes[0].lines[0].get_ydata()
    np.testing.assert_array_equal(first, [0, 1, 0, 1, 0, 1, 0, 1])  # seed 5: 5 6 5 6 ...
    drift = fig.axes[1].lines[0].get_ydata()
    np.testing.assert_array_equal(drift, np.array(seed_sequence(settings[1])))  # base 0
    # decrement from 0 wraps to 2**64 - 1, drawn as -1, -2, ...
    np.testing.assert_array_equal(fig.axes[2].lines[0].get_ydata()[:4], [0, -1, -2, -3])
    # random seeds: where they land in [0, 2**64)
    rnd = fig.axes[3].lines[0].get_ydata()
    np.testing.assert_allclose(rnd, np.array(seed_sequence(settings[3]), dtype=float) / 2**64)
    assert fig.axes[-1].get_xlabel() == "loop"
    # Alternate values: even loops are a separate series of markers.
    even = fig.axes[0].lines[1]
    np.testing.assert_array_equal(even.get_xdata(), [0, 2, 4, 6])
    assert "alternate_values on" in fig.axes[0].get_title(loc="left")


def test_seed_sequence_single_params():
    fig = plots.plot_seed_sequence(make_params(seed=7, seed_mode_seq="fixed"))
    render(fig)
    assert len(fig.axes) == 1
    assert list(fig.axes[0].lines[0].get_ydata()) == [0] * 20


# -- keyframe weights ------------------------------------------------------------------------------


def test_chain_weights_fold_the_slerp_chain():
    assert plots.chain_weights((("a", 1.0),)) == {"a": 1.0}
    weights = plots.chain_weights((("a", 1.0), ("b", 0.5), ("c", 0.5)))
    assert weights == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})
    assert plots.chain_weights((("a", 1.0), ("b", 0.5), ("a", 0.5)))["a"] == pytest.approx(0.75)


def test_keyframe_weights_node_slerp_never_arrives_smooth_does():
    settings = [
        make_params(positive_seq=KEYFRAMES, sequence_loop_count=12),
        make_params(
            positive_seq=KEYFRAMES,
            sequence_loop_count=12,
            use_conditioning_slerp=True,
            cond_slerp_strength=0.5,
        ),
        make_params(
            positive_seq=KEYFRAMES, sequence_loop_count=12, keyframe_interpolation="linear"
        ),
        make_params(positive_seq=KEYFRAMES, sequence_loop_count=12, keyframe_interpolation="ease"),
    ]
    fig = plots.plot_keyframe_weights(settings)
    render(fig)
    assert len(fig.axes) == 4
    for ax in fig.axes:
        lines = solid_lines(ax)
        assert [line.get_label() for line in lines] == [
            "a red circle",
            "a blue square",
            "a green triangle",
        ]
        assert all(len(line.get_ydata()) == 12 for line in lines)
        # The weights of every loop sum to 1.
        np.testing.assert_allclose(np.sum([line.get_ydata() for line in lines], axis=0), 1.0)
    hard, node, linear, ease = ([line.get_ydata() for line in solid_lines(ax)] for ax in fig.axes)
    assert list(hard[1]) == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    # The node moves half way at each keyframe loop, then holds: the square never reaches 1.
    assert list(node[1]) == [0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert max(node[2]) == 0.5
    # Smooth transitions arrive exactly at each keyframe.
    np.testing.assert_allclose(linear[1][:5], [0, 0.25, 0.5, 0.75, 1])
    assert linear[2][8] == ease[2][8] == 1.0
    np.testing.assert_allclose(ease[1][2], 0.5)
    assert ease[1][1] < linear[1][1]  # eased: slower at first
    # Dashed keyframe markers at loops 4 and 8.
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in dashed) == [4, 8]


def test_keyframe_weights_values_match_the_plan_chains():
    params = make_params(
        positive_seq=KEYFRAMES,
        negative_seq="0: blurry\n6: dark",
        sequence_loop_count=10,
        use_conditioning_slerp=True,
        cond_slerp_strength=0.3,
    )
    fig = plots.plot_keyframe_weights(params, side="negative")
    lines = solid_lines(fig.axes[0])
    assert [line.get_label() for line in lines] == ["blurry", "dark"]
    for loop, plan in enumerate(plan_sequence(params)):
        expected = plots.chain_weights(plan.negative)
        assert lines[1].get_ydata()[loop] == pytest.approx(expected.get("dark", 0.0))
    with pytest.raises(ValueError, match="side"):
        plots.plot_keyframe_weights(params, side="both")


# -- drift -----------------------------------------------------------------------------------------


def test_latent_drift_values():
    a = torch.zeros(2, 2)
    a[0, 0] = 1.0
    b = torch.zeros(2, 2)
    b[0, 1] = 1.0
    distance, cosine = plots.latent_drift(torch.stack([a, a, b]))
    np.testing.assert_allclose(distance, [0.0, math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(cosine, [1.0, 0.0], atol=1e-6)


def test_drift_accepts_frames_and_compares_runs():
    from seqwidgets.engine import Frame

    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    frames = [
        Frame(
            index=i,
            seed=i,
            latent=latents[i],
            denoise=0.5,
            positive=(("x", 1.0),),
            negative=(("", 1.0),),
            sigmas=torch.zeros(0),
        )
        for i in range(6)
    ]
    fig = plots.plot_drift({"run": frames, "reversed": latents.flip(0)}, keyframes=[3])
    render(fig)
    dist_ax, cos_ax = fig.axes
    run, backwards = solid_lines(dist_ax)
    assert list(run.get_xdata()) == [1, 2, 3, 4, 5]
    expected, cosine = plots.latent_drift(latents)
    np.testing.assert_allclose(run.get_ydata(), expected, rtol=1e-6)
    np.testing.assert_allclose(solid_lines(cos_ax)[0].get_ydata(), cosine, rtol=1e-6)
    np.testing.assert_allclose(backwards.get_ydata(), expected[::-1], rtol=1e-6)
    assert "L2" in dist_ax.get_ylabel() and "cosine" in cos_ax.get_ylabel()
    assert [t.get_text() for t in dist_ax.get_legend().get_texts()] == ["run", "reversed"]


def test_drift_needs_two_latents():
    with pytest.raises(ValueError, match="at least two"):
        plots.plot_drift(torch.zeros(1, 4, 8, 8))


# -- interpolation norms ---------------------------------------------------------------------------


def test_interpolation_norms_lerp_dips_slerp_keeps_the_norm():
    fig = plots.plot_interpolation_norms(dim=4096, points=21)
    render(fig)
    blend, slerp, cosine = fig.axes[0].lines[:3]
    assert [blend.get_label(), slerp.get_label(), cosine.get_label()] == [
        "Blend (lerp)",
        "Slerp",
        "Cosine Interp",
    ]
    assert len(blend.get_xdata()) == 21
    middle = 10
    assert blend.get_ydata()[middle] == pytest.approx(1 / math.sqrt(2), abs=0.03)
    assert cosine.get_ydata()[middle] == pytest.approx(blend.get_ydata()[middle])
    assert min(slerp.get_ydata()) > 0.97
    assert blend.get_ydata()[0] == pytest.approx(1.0)


# -- contact sheet ---------------------------------------------------------------------------------


def test_contact_sheet_figure_shows_the_sheet_at_its_size():
    from seqwidgets.export import contact_sheet

    images = [Image.new("RGB", (32, 32), (40 * i, 100, 200)) for i in range(5)]
    captions = [f"loop {i}" for i in range(5)]
    fig = plots.plot_contact_sheet(images, captions, columns=5, title="a branch")
    png = render(fig)
    shown = fig.axes[0].images[0].get_array()
    expected = np.asarray(contact_sheet(images, captions, columns=5))
    np.testing.assert_array_equal(shown, expected)
    assert abs(png.width - expected.shape[1]) <= 2
    assert fig._suptitle.get_text() == "a branch"


def test_figures_display_in_jupyter_without_the_inline_backend():
    fig = plots.plot_schedulers(steps=5)
    png = fig._repr_png_()  # what IPython calls for a cell's last expression
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_timelines_one_aligned_row_per_label():
    from seqwidgets.export import contact_sheet

    red = [Image.new("RGB", (16, 16), (200, 0, 0))] * 4
    blue = [Image.new("RGB", (16, 16), (0, 0, 200))] * 2
    fig = plots.plot_timelines(
        {"run": red, "branch": blue}, {"branch": ["0 shared", "1"]}, cell=32, title="tree"
    )
    render(fig)
    run, branch = fig.axes
    assert [run.get_title(loc="left"), branch.get_title(loc="left")] == ["run", "branch"]
    expected = np.asarray(contact_sheet(red, [f"loop {i}" for i in range(4)], columns=4, cell=32))
    np.testing.assert_array_equal(run.images[0].get_array(), expected)
    # Rows start at the same left edge with the same scale: loop i sits in the same column.
    assert run.get_position().x0 == branch.get_position().x0 == 0
    run_w = run.get_position().width / expected.shape[1]
    branch_w = branch.get_position().width / branch.images[0].get_array().shape[1]
    assert run_w == pytest.approx(branch_w)
    assert branch.get_position().y1 < run.get_position().y0
    with pytest.raises(ValueError, match="at least one row"):
        plots.plot_timelines({})
