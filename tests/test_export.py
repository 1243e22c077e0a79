"""export.py: GIF / MP4 / PNG frames / contact sheet, overwrite protection, atomic writes."""

from __future__ import annotations

import importlib.util
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from seqwidgets.export import (
    contact_sheet,
    save_contact_sheet,
    save_gif,
    save_mp4,
    save_png_frames,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def frames(n: int = 4, size: tuple[int, int] = (64, 64)) -> list[Image.Image]:
    """Distinct frames with few colours (GIF palettes keep them exactly)."""
    images = []
    for i in range(n):
        image = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
        image.paste((255, 255, 255), (0, 0, 8 + 4 * i, 8))  # a bar whose length marks the frame
        images.append(image)
    return images


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# --- GIF --------------------------------------------------------------------------------------


def test_gif_round_trip(tmp_path):
    images = frames(4)
    path = save_gif(images, tmp_path / "seq.gif", fps=4)
    assert path == tmp_path / "seq.gif"
    read = iio.imread(path, index=None)  # all frames, [N, H, W, C]
    assert read.shape[:3] == (4, 64, 64)
    for got, want in zip(read, images, strict=True):
        assert np.array_equal(got[..., :3], np.asarray(want))
    with Image.open(path) as gif:
        assert gif.n_frames == 4
        assert gif.info["duration"] == 250
        assert gif.info["loop"] == 0
    assert leftovers(tmp_path) == []


def test_gif_refuses_to_overwrite(tmp_path):
    path = tmp_path / "seq.gif"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="seq.gif"):
        save_gif(frames(2), path)
    assert path.read_bytes() == b"precious"
    save_gif(frames(2), path, overwrite=True)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="fps"):
        save_gif(frames(2), tmp_path / "a.gif", fps=0)

    def crash_mid_write(self, fp, *args, **kwargs):
        with open(fp, "wb") as file:
            file.write(b"GIF89a half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_gif(frames(2), tmp_path / "b.gif")
    with pytest.raises(OSError, match="disk full"):
        save_png_frames(frames(2), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_empty_and_mixed_sizes(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        save_gif([], tmp_path / "a.gif")
    mixed = frames(3)
    mixed[2] = mixed[2].resize((32, 64))
    with pytest.raises(ValueError, match=r"image 2 is 32x64"):
        save_gif(mixed, tmp_path / "a.gif")
    with pytest.raises(ValueError, match="image 2"):
        save_png_frames(mixed, tmp_path / "frames")
    assert list(tmp_path.iterdir()) == []


# --- MP4 --------------------------------------------------------------------------------------


def test_mp4_without_ffmpeg_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install "seqwidgets\[video\]"'):
        save_mp4(frames(2), tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    importlib.util.find_spec("imageio_ffmpeg") is None, reason="needs seqwidgets[video]"
)
# imageio-ffmpeg's read_frames leaves its pipe objects to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mp4_round_trip(tmp_path):
    import imageio_ffmpeg

    images = frames(5)
    path = save_mp4(images, tmp_path / "seq.mp4", fps=8)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(64, 64, 3) for f in reader]
    assert tuple(meta["size"]) == (64, 64) and meta["fps"] == 8 and len(decoded) == 5
    for got, want in zip(decoded, images, strict=True):  # lossy, but the colours survive
        assert np.abs(got[32:, 32:].astype(int) - np.asarray(want)[32:, 32:]).mean() < 8
    with pytest.raises(FileExistsError):
        save_mp4(frames(5), path)
    odd = save_mp4(frames(2, size=(63, 45)), tmp_path / "odd.mp4")  # yuv420p needs even sizes
    reader = imageio_ffmpeg.read_frames(str(odd))
    assert tuple(next(reader)["size"]) == (64, 46)
    reader.close()
    assert leftovers(tmp_path) == []


# --- PNG frames -------------------------------------------------------------------------------


def test_png_frames_naming_and_content(tmp_path):
    images = frames(3)
    paths = save_png_frames(images, tmp_path / "out")
    assert [p.name for p in paths] == ["loop_0000.png", "loop_0001.png", "loop_0002.png"]
    for path, image in zip(paths, images, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    assert leftovers(tmp_path / "out") == []

    named = save_png_frames(frames(2), tmp_path / "out", prefix="branch")
    assert [p.name for p in named] == ["branch_0000.png", "branch_0001.png"]


def test_png_frames_refuse_to_overwrite_any(tmp_path):
    save_png_frames(frames(2), tmp_path)
    before = (tmp_path / "loop_0001.png").read_bytes()
    with pytest.raises(FileExistsError, match="loop_0000.png"):
        save_png_frames(frames(3)[::-1], tmp_path)
    # Nothing was written, not even the frame whose name was free.
    assert not (tmp_path / "loop_0002.png").exists()
    assert (tmp_path / "loop_0001.png").read_bytes() == before
    save_png_frames(frames(3), tmp_path, overwrite=True)
    assert (tmp_path / "loop_0002.png").exists()


# --- contact sheet ----------------------------------------------------------------------------


def test_contact_sheet_layout_without_captions():
    sheet = contact_sheet(frames(5), columns=3)
    # 64x64 images are upscaled 2x (NEAREST) into 128 px cells; 4 px padding around cells.
    assert sheet.size == (3 * (128 + 4) + 4, 2 * (128 + 4) + 4)
    cell = np.asarray(sheet)[4 : 4 + 128, 4 : 4 + 128]
    want = np.asarray(frames(1)[0].resize((128, 128), Image.Resampling.NEAREST))
    assert np.array_equal(cell, want)


def test_contact_sheet_draws_captions():
    images = frames(4)
    captions = [f"loop {i} · seed {42 + i}\na red circle on a blue square" for i in range(4)]
    plain = contact_sheet(images, columns=2)
    sheet = contact_sheet(images, captions, columns=2)
    assert sheet.width == plain.width and sheet.height > plain.height
    pixels = np.asarray(sheet)
    band = pixels[4 + 128 : 4 + 128 + (sheet.height - plain.height) // 2]  # first row's band
    first_caption = band[:, 4 : 4 + 128]
    assert (first_caption != 255).any(), "caption band is blank"
    assert (first_caption < 128).any(), "no dark text pixels"


def test_contact_sheet_wraps_and_ellipsises_long_captions():
    long = "word " * 200
    sheet = contact_sheet(frames(1), [long], max_caption_lines=2)
    one_line = contact_sheet(frames(1), ["x"])
    two_lines = contact_sheet(frames(1), ["x\ny"])
    assert sheet.size == two_lines.size and sheet.height > one_line.height
    # Nothing is drawn outside the cell: the right padding column stays background.
    assert (np.asarray(sheet)[:, -4:] == 255).all()


def test_contact_sheet_mixed_sizes_and_errors():
    images = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (32, 64), "blue")]
    sheet = contact_sheet(images, ["a", ["b", "c"]], cell=64)
    assert sheet.width == 2 * (64 + 4) + 4
    with pytest.raises(ValueError, match="2 captions for 1 images"):
        contact_sheet(images[:1], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        contact_sheet([])


def test_save_contact_sheet(tmp_path):
    path = save_contact_sheet(frames(3), tmp_path / "sheet.png", ["a", "b", "c"], columns=3)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == contact_sheet(frames(3), ["a", "b", "c"], columns=3).size
    with pytest.raises(FileExistsError, match="sheet.png"):
        save_contact_sheet(frames(3), path)
    with pytest.raises(ValueError, match="format"):
        save_contact_sheet(frames(3), tmp_path / "sheet.nope")
    assert leftovers(tmp_path) == []
