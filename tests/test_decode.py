"""decode.py: VAE decode/encode with a tiny random AutoencoderKL, previews, thumbnails, the cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from seqwidgets.decode import (
    FLUX_LATENT_RGB_BIAS,
    FLUX_LATENT_RGB_FACTORS,
    SD3_LATENT_RGB_BIAS,
    SD3_LATENT_RGB_FACTORS,
    SD15_LATENT_RGB_FACTORS,
    SDXL_LATENT_RGB_BIAS,
    SDXL_LATENT_RGB_FACTORS,
    ImageCache,
    TAESDPreviewer,
    decode_latents,
    encode_image,
    latent_to_rgb,
    make_previewer,
    preview_factors,
    thumbnail,
    to_rgba_array,
)
from seqwidgets.testing import tiny_pipeline

SCALE = 0.5


def tiny_vae(**config) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=SCALE,
        **config,
    )
    return vae.eval()


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return tiny_vae()


def manual_decode(vae, raw_latents: torch.Tensor) -> np.ndarray:
    """What decode_latents must compute, written out plainly from raw VAE latents."""
    with torch.no_grad():
        x = vae.decode(raw_latents).sample
    x = (x / 2 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- decode_latents ---------------------------------------------------------------------------


def test_decode_applies_scaling_factor(vae):
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images = decode_latents(vae, latents)
    expected = manual_decode(vae, latents / SCALE)
    assert len(images) == 3
    for image, want in zip(images, expected, strict=True):
        assert image.mode == "RGB" and image.size == (16, 16)
        assert np.array_equal(np.asarray(image), want)
    # Sanity: the scaling matters, i.e. decoding unscaled latents gives different pixels.
    assert not np.array_equal(manual_decode(vae, latents), expected)


def test_decode_applies_shift_factor():
    vae = tiny_vae(shift_factor=0.3)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    (image,) = decode_latents(vae, latents)
    assert np.array_equal(np.asarray(image), manual_decode(vae, latents / SCALE + 0.3)[0])


def test_decode_single_latent_and_chunks_agree(vae):
    latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    whole = decode_latents(vae, latents, batch_size=8)
    chunked = decode_latents(vae, latents, batch_size=2)
    single = decode_latents(vae, latents[4])
    assert len(chunked) == 5 and len(single) == 1
    for a, b in zip(whole, chunked, strict=True):
        # Group norm is per sample, so chunking changes at most float round-off.
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 1
    assert np.abs(np.asarray(single[0], int) - np.asarray(whole[4], int)).max() <= 1


def test_decode_does_not_modify_input(vae):
    latents = torch.randn(2, 4, 8, 8)
    before = latents.clone()
    decode_latents(vae, latents)
    assert torch.equal(latents, before)


def test_decode_wrong_channels_names_both(vae):
    with pytest.raises(ValueError, match=r"3 channels.*expects 4"):
        decode_latents(vae, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        decode_latents(vae, torch.zeros(4, 8))
    with pytest.raises(ValueError, match="batch_size"):
        decode_latents(vae, torch.zeros(4, 8, 8), batch_size=0)


def test_decode_fp16_force_upcast_runs_fp32_and_restores():
    vae = tiny_vae(force_upcast=True).to(torch.float16)
    seen = []
    original = vae.decode

    def spy(z, *args, **kwargs):
        seen.append((z.dtype, vae.dtype))
        return original(z, *args, **kwargs)

    vae.decode = spy
    latents = torch.randn(1, 4, 8, 8)
    (image,) = decode_latents(vae, latents)
    assert seen == [(torch.float32, torch.float32)]
    assert vae.dtype == torch.float16
    assert image.size == (16, 16)


# --- encode_image -----------------------------------------------------------------------------


def test_encode_shapes_and_scaling(vae):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)
    latents = encode_image(vae, pixels)
    # Rounded down to 16x24 (multiple of 8), then halved by the 2-block VAE.
    assert latents.shape == (1, 4, 8, 12) and latents.dtype == torch.float32

    x = torch.from_numpy(pixels[:16, :24]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        raw = vae.encode(x * 2 - 1).latent_dist.mode()
    # Rounding down resizes rather than crops, so compare on an image already a multiple of 8.
    same = encode_image(vae, Image.fromarray(pixels[:16, :24]))
    torch.testing.assert_close(same, raw * SCALE)


def test_encode_size_and_inputs(vae):
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    assert encode_image(vae, image, size=(32, 16)).shape == (1, 4, 8, 16)
    tensor = torch.rand(3, 16, 16)
    assert encode_image(vae, tensor).shape == (1, 4, 8, 8)
    assert encode_image(vae, tensor[None], size=(8, 24)).shape == (1, 4, 12, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_image(vae, tensor * 2 - 1)
    with pytest.raises(ValueError, match="multiple of 2"):
        encode_image(vae, image, size=(31, 16))
    with pytest.raises(TypeError, match="uint8"):
        encode_image(vae, np.zeros((16, 16, 3), dtype=np.float32))


def test_encode_shift_factor_round_trip_formula():
    vae = tiny_vae(shift_factor=0.25)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        raw = vae.encode(x * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(encode_image(vae, x), (raw - 0.25) * SCALE)


# --- latent_to_rgb / preview_factors ----------------------------------------------------------


def test_latent_to_rgb_hand_computation():
    latents = torch.zeros(4, 1, 2)
    latents[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    latents[:, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    rgb = latent_to_rgb(latents, SD15_LATENT_RGB_FACTORS)
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    # Pixel 0 is row 0 of the factors, pixel 1 is row 3; then (v + 1) / 2 * 255.
    for pixel, row in ((0, 0), (1, 3)):
        want = [round((v + 1) / 2 * 255) for v in SD15_LATENT_RGB_FACTORS[row]]
        assert rgb[0, pixel].tolist() == want


def test_latent_to_rgb_bias_and_clamp():
    latents = torch.full((1, 4, 1, 1), 10.0)
    rgb = latent_to_rgb(latents, [[1, -1, 0]] * 4, bias=[0, 0, 0.5])
    assert rgb[0, 0].tolist() == [255, 0, round(0.75 * 255)]


def test_latent_to_rgb_does_not_modify_input():
    latents = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(4))
    before = latents.clone()
    latent_to_rgb(latents, SDXL_LATENT_RGB_FACTORS, SDXL_LATENT_RGB_BIAS)
    assert torch.equal(latents, before)
    with pytest.raises(ValueError, match="factors"):
        latent_to_rgb(latents, [[1, 0, 0]] * 3)


@pytest.mark.parametrize(
    ("kind", "factors", "bias"),
    [
        ("sd", SD15_LATENT_RGB_FACTORS, None),
        ("sdxl", SDXL_LATENT_RGB_FACTORS, SDXL_LATENT_RGB_BIAS),
        ("sd3", SD3_LATENT_RGB_FACTORS, SD3_LATENT_RGB_BIAS),
        ("flux", FLUX_LATENT_RGB_FACTORS, FLUX_LATENT_RGB_BIAS),
        ("flux-schnell", FLUX_LATENT_RGB_FACTORS, FLUX_LATENT_RGB_BIAS),
    ],
)
def test_preview_factors_by_family(kind, factors, bias):
    pipe = tiny_pipeline(kind)
    assert preview_factors(pipe) == (factors, bias)
    fitted = ([[0.1, 0.2, 0.3]] * 4, [0.0, 0.1, 0.2])
    pipe.seqwidgets_latent_rgb = fitted
    assert preview_factors(pipe) == fitted


def test_comfyui_flow_factors_as_published():
    # comfy/latent_formats.py (SD3, Flux), copied by hand: first and last rows and the bias.
    assert len(SD3_LATENT_RGB_FACTORS) == len(FLUX_LATENT_RGB_FACTORS) == 16
    assert SD3_LATENT_RGB_FACTORS[0] == (-0.0922, -0.0175, 0.0749)
    assert SD3_LATENT_RGB_FACTORS[-1] == (-0.1448, -0.1463, -0.1189)
    assert FLUX_LATENT_RGB_FACTORS[0] == (-0.0346, 0.0244, 0.0681)
    assert FLUX_LATENT_RGB_FACTORS[-1] == (-0.1262, -0.0982, -0.0778)
    assert FLUX_LATENT_RGB_BIAS == (-0.0329, -0.0718, -0.0851)
    # the preview of a 16-channel latent: x @ factors + bias, then (v + 1) / 2
    latent = torch.zeros(16, 2, 2)
    latent[2] = 1.0
    rgb = latent_to_rgb(latent, SD3_LATENT_RGB_FACTORS, SD3_LATENT_RGB_BIAS)
    want = [
        round(((f + b) + 1) / 2 * 255)
        for f, b in zip((0.1994, 0.0927, 0.0458), SD3_LATENT_RGB_BIAS, strict=True)
    ]
    assert rgb[0, 0].tolist() == want


def test_preview_factors_unknown_pipeline(vae):
    class NotAPipeline:
        pass

    pipe = NotAPipeline()
    pipe.vae = vae
    assert preview_factors(pipe) is None


# --- thumbnail / to_rgba_array ----------------------------------------------------------------


def checkerboard(size: int) -> Image.Image:
    tile = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([tile] * 3, axis=-1))


def test_thumbnail_upscales_tiny_images_crisply():
    thumb = thumbnail(checkerboard(64), 96)
    assert thumb.size == (96, 96)
    # NEAREST keeps only the original colours: no blurred greys.
    assert set(np.unique(np.asarray(thumb))) == {0, 255}
    assert thumbnail(checkerboard(8), 256).size == (32, 32)  # at most 4x


def test_thumbnail_downscales_keeping_aspect():
    image = Image.new("RGB", (400, 200), (10, 20, 30))
    thumb = thumbnail(image, (100, 100))
    assert thumb.size == (100, 50)
    assert thumbnail(image, (400, 200)) is not image


def test_to_rgba_array():
    image = Image.new("RGB", (3, 2), (1, 2, 3))
    array = to_rgba_array(image)
    assert array.shape == (2, 3, 4) and array.dtype == np.uint8
    assert array[0, 0].tolist() == [1, 2, 3, 255]


# --- ImageCache -------------------------------------------------------------------------------


def solid(value: int, size: int = 4) -> Image.Image:
    return Image.new("RGB", (size, size), (value, value, value))


def test_cache_lru_eviction_order():
    cache = ImageCache(max_items=2)
    made = []

    def maker(key):
        def make():
            made.append(key)
            return solid(key)

        return make

    cache.get(1, maker(1))
    cache.get(2, maker(2))
    cache.get(1, maker(1))  # hit: 1 becomes most recent
    cache.get(3, maker(3))  # evicts 2, the least recently used
    assert made == [1, 2, 3]
    assert cache.keys() == [1, 3] and len(cache) == 2 and 2 not in cache
    cache.get(2, maker(2))  # made again on demand
    assert made == [1, 2, 3, 2] and cache.keys() == [3, 2]
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_cache_byte_bound():
    cache = ImageCache(max_items=100, max_bytes=4 * 4 * 3 * 2)  # two 4x4 RGB images
    for key in range(3):
        cache.get(key, lambda key=key: solid(key))
    assert cache.keys() == [1, 2] and cache.nbytes == 96
    big = cache.get("big", lambda: solid(9, size=8))  # alone over the bound: returned, not kept
    assert big.size == (8, 8) and "big" not in cache and cache.nbytes == 96
    cache.put(5, solid(5))
    assert cache.keys() == [2, 5]


def test_cache_failed_make_is_not_cached():
    cache = ImageCache()

    def fail():
        raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        cache.get("k", fail)
    assert cache.get("k", lambda: solid(1)).getpixel((0, 0)) == (1, 1, 1)


def test_cache_thread_safety_smoke():
    cache = ImageCache(max_items=8)
    calls: dict[int, int] = {}
    calls_lock = threading.Lock()
    errors = []

    def make(key):
        with calls_lock:
            calls[key] = calls.get(key, 0) + 1
        time.sleep(0.001)
        return solid(key)

    def worker(offset):
        try:
            for i in range(200):
                key = (i * 7 + offset) % 12
                image = cache.get(key, lambda key=key: make(key))
                assert image.getpixel((0, 0)) == (key, key, key)
        except Exception as error:  # surfaced below; an assert in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 8
    assert cache.nbytes == len(cache) * 4 * 4 * 3


def test_cache_concurrent_misses_make_once():
    cache = ImageCache()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        release.wait(5)
        return solid(7)

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get("k", slow)))
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: results.append(cache.get("k", slow)))
    second.start()
    # A hit on another key is not blocked by the slow make().
    assert cache.get("other", lambda: solid(1)).size == (4, 4)
    time.sleep(0.05)  # let the second thread reach get() and wait on the first make()
    release.set()
    first.join()
    second.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] is results[1]


# --- TAESD previews ----------------------------------------------------------------------------


def tiny_taesd(latent_channels: int):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8,) * 4,
        decoder_block_out_channels=(8,) * 4,
        num_encoder_blocks=(1,) * 4,
        num_decoder_blocks=(1,) * 4,
        latent_channels=latent_channels,
    )


class FakeClock:
    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step  # every reading advances: a decode "takes" one step
        return self.now


def test_taesd_previewer_decodes_a_copy_at_a_bounded_rate():
    decoder = tiny_taesd(16)
    clock = FakeClock(0.5)
    previewer = TAESDPreviewer(decoder, budget=0.1, min_interval=0.1, clock=clock)
    latent = torch.randn(16, 8, 8)
    before = latent.clone()
    image = previewer(latent)
    assert image.size == (64, 64) and torch.equal(latent, before)
    want = decoder.decode(latent[None]).sample
    want = ((want / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0)
    assert np.array_equal(np.asarray(image), want.numpy())
    # started at t = 0.5 and "took" 0.5 s: with a 10 % budget the next starts at 0.5 + 5
    assert previewer(latent) is None  # t = 1.5
    clock.now = 4.9
    assert previewer(latent) is None  # t = 5.4
    clock.now = 5.0
    assert previewer(latent) is not None  # t = 5.5
    assert previewer(latent, force=True) is not None
    assert previewer.decodes == 3 and previewer.seconds == pytest.approx(1.5)


def test_taesd_from_a_folder_and_the_fallback(tmp_path):
    pipe = tiny_pipeline("sd3")
    tiny_taesd(16).save_pretrained(tmp_path / "taesd3", safe_serialization=True)
    previewer, note = make_previewer(pipe, "taesd", source=tmp_path / "taesd3")
    assert isinstance(previewer, TAESDPreviewer) and note == "TAESD preview"
    assert previewer(torch.zeros(16, 8, 8)).size == (64, 64)
    # a decoder for the wrong family is refused, naming the folder and the right one
    tiny_taesd(4).save_pretrained(tmp_path / "taesd", safe_serialization=True)
    with pytest.raises(
        ValueError, match=r"taesd: a TAESD decoder for 4-channel.*madebyollin/taesd3"
    ):
        TAESDPreviewer.load(pipe, tmp_path / "taesd")
    # unavailable (offline, nothing cached): latent-to-RGB with a note saying why
    previewer, note = make_previewer(
        pipe, "taesd", source=tmp_path / "missing", local_files_only=True
    )
    assert note.startswith("TAESD preview unavailable (") and note.endswith("latent-to-RGB preview")
    assert previewer(torch.zeros(16, 8, 8)).size == (8, 8)
    with pytest.raises(ValueError, match="preview must be"):
        make_previewer(pipe, "vae")
