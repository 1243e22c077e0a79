"""The shipped toy model through the engine: a keyframe change a learner can watch happen."""

import numpy as np
import pytest

import seqwidgets as sw
from seqwidgets.decode import decode_latents


def dominant_channel(image) -> str:
    """'red', 'green' or 'blue': the channel furthest above the image's grey background."""
    pixels = np.asarray(image).reshape(-1, 3).astype(float)
    strongest = pixels[np.argsort(pixels.std(axis=1))[-200:]]  # the most saturated pixels
    return ("red", "green", "blue")[int(strongest.mean(axis=0).argmax())]


@pytest.mark.slow
def test_red_circle_to_blue_square_sequence_changes_color_at_the_keyframe():
    pipe = sw.load_pipeline(device="cpu")
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n6: a blue square",
        sequence_loop_count=10,
        steps=10,
        cfg=7.5,
        denoise_seq=0.6,
    )
    latents = sw.SequenceSampler(pipe).sample(params)
    colors = [dominant_channel(image) for image in decode_latents(pipe.vae, latents)]
    assert colors[:6] == ["red"] * 6
    assert colors[7:] == ["blue"] * 3
