"""Export a sequence's images: animated GIF, MP4, numbered PNG frames, a captioned contact sheet.

Every writer refuses to replace an existing file unless `overwrite=True`, and writes through
`seqwidgets._io`: to a temporary file in the target folder, synced, then renamed into place, so a
crash, a kill or a full disk never leaves a half-written or empty file under the target name.
Files get the user's ordinary permissions (the umask), like any file they create.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from seqwidgets import _io
from seqwidgets.decode import thumbnail
from seqwidgets.device import check_image_memory
from seqwidgets.params import in_range, short_repr

__all__ = [
    "EXPORT_FORMATS",
    "FPS_RANGE",
    "check_fps",
    "GIF_MAX_FPS",
    "check_contact_sheet",
    "contact_sheet",
    "describe_frames",
    "frame_files",
    "gif_frame_centiseconds",
    "remove_stale_frames",
    "save_contact_sheet",
    "save_gif",
    "save_mp4",
    "save_png_frames",
]

#: What `Session.export` writes, in one place: format name -> (what a menu shows, the file
#: suffix; "" for ``png``, which writes a folder of frames).
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "gif": ("GIF", ".gif"),
    "mp4": ("MP4", ".mp4"),
    "png": ("PNG frames", ""),
    "contact_sheet": ("Contact sheet", ".png"),
}
#: Frames per second a GIF or MP4 may be asked for: 0.01 fps (100 s a frame) to 100 fps.
FPS_RANGE = (0.01, 100.0)
#: The fastest a GIF plays. GIF stores each frame's duration in whole centiseconds, and browsers
#: play a duration of 0 or 1 cs as 10 cs (10 fps), so 2 cs (50 fps) is the shortest that works.
GIF_MAX_FPS = 50.0

#: The largest a contact sheet's layout may ask for: columns (the node runs at most 1,024
#: loops), a cell's width or height in pixels, and caption lines per cell.
MAX_COLUMNS = 1024
MAX_CELL = 4096
MAX_CAPTION_LINES = 100

_VIDEO_HINT = 'MP4 export needs imageio-ffmpeg: pip install "seqwidgets[video]"'


def _as_images(images, *, same_size: bool = True) -> list[Image.Image]:
    """Validate a non-empty list of PIL images (uint8 arrays are converted) as RGB."""
    images = list(images)
    if not images:
        raise ValueError("no images to export: the image list is empty")
    converted = []
    for i, image in enumerate(images):
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"image {i} is a {type(image).__name__}, expected a PIL image or uint8 array"
            )
        converted.append(image if image.mode == "RGB" else image.convert("RGB"))
    if same_size:
        first = converted[0].size
        for i, image in enumerate(converted):
            if image.size != first:
                raise ValueError(
                    f"image {i} is {image.width}x{image.height} but image 0 is "
                    f"{first[0]}x{first[1]}: all images must have the same size"
                )
    return converted


def _check_target(path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    return path


def _write_atomic(path: Path, write, overwrite: bool) -> Path:
    _io.remove_orphans(path.parent)
    return _io.write_file(path, write, overwrite=overwrite)


def check_fps(fps: float) -> float:
    """``fps`` as a float if it is within `FPS_RANGE`, else a `ValueError` naming ``fps``."""
    low, high = FPS_RANGE
    if not in_range(fps, low, high):
        raise ValueError(f"fps: {fps!r} is out of range; allowed: a number from {low} to {high}")
    return float(fps)


def gif_frame_centiseconds(fps: float) -> int:
    """The duration a GIF frame gets at ``fps``: the nearest whole centisecond, at least 2.

    Example:
        >>> gif_frame_centiseconds(4)
        25
        >>> gif_frame_centiseconds(30)  # plays at 33.3 fps: GIF cannot hold 30 exactly
        3
        >>> gif_frame_centiseconds(60)  # 1 cs would play at 10 fps in browsers
        2
    """
    return max(2, round(100 / fps))


def save_gif(
    images: Sequence[Image.Image],
    path: str | os.PathLike,
    *,
    fps: float = 4,
    loop: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an animated GIF, one frame per image.

    Args:
        images (`Sequence[PIL.Image.Image]`): frames, all the same size.
        path (`str` or `os.PathLike`): the file to write.
        fps (`float`, defaults to 4): frames per second. GIF stores whole centiseconds per
            frame, so the GIF plays at ``100 / gif_frame_centiseconds(fps)`` fps; above
            `GIF_MAX_FPS` (50) it plays at 50 fps, with a warning (MP4 holds any rate).
        loop (`int`, defaults to 0): times to repeat; 0 repeats forever.
        overwrite (`bool`, defaults to `False`): replace an existing file.

    Identical consecutive frames (a sequence that has converged) are merged by Pillow into one
    longer frame, so the file may hold fewer frames than `images` while playing as long.
    Each frame gets its own 256-colour palette.
    """
    frames = _as_images(images)
    fps = check_fps(fps)
    path = _check_target(path, overwrite)
    centiseconds = gif_frame_centiseconds(fps)
    if fps > GIF_MAX_FPS:
        warnings.warn(
            f"fps: a GIF plays at most {GIF_MAX_FPS:g} frames per second (browsers slow faster "
            f"ones to 10); {fps:g} fps is written as {GIF_MAX_FPS:g} fps (MP4 holds any rate)",
            stacklevel=2,
        )

    def write(tmp: Path) -> None:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=centiseconds * 10,  # Pillow takes milliseconds and stores ms // 10
            loop=loop,
        )

    return _write_atomic(path, write, overwrite)


def save_mp4(
    images: Sequence[Image.Image],
    path: str | os.PathLike,
    *,
    fps: float = 8,
    overwrite: bool = False,
) -> Path:
    """Write an H.264 MP4 (yuv420p, plays in browsers), one frame per image.

    Needs the optional extra: `pip install "seqwidgets[video]"` (imageio-ffmpeg, which ships
    an ffmpeg binary). yuv420p needs even sizes: an odd width or height is padded by one
    repeated edge pixel (not resampled).

    Args:
        images (`Sequence[PIL.Image.Image]`): frames, all the same size.
        path (`str` or `os.PathLike`): the file to write.
        fps (`float`, defaults to 8): frames per second.
        overwrite (`bool`, defaults to `False`): replace an existing file.
    """
    frames = _as_images(images)
    fps = check_fps(fps)
    path = _check_target(path, overwrite)
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError(_VIDEO_HINT) from error

    width, height = frames[0].size
    pad = ((0, height % 2), (0, width % 2), (0, 0))

    def write(tmp: Path) -> None:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width + width % 2, height + height % 2),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,  # sizes are already even
            quality=8,
            ffmpeg_log_level="error",
        )
        writer.send(None)  # start the generator
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(np.pad(np.asarray(frame), pad, mode="edge")))
        finally:
            writer.close()

    return _write_atomic(path, write, overwrite)


def save_png_frames(
    images: Sequence[Image.Image],
    folder: str | os.PathLike,
    *,
    prefix: str = "loop",
    overwrite: bool = False,
) -> list[Path]:
    """Write one PNG per image, `{prefix}_0000.png`, `{prefix}_0001.png`, ... in `folder`.

    Numbers have at least 4 digits (more for more than 10,000 frames), so they sort by name.
    `folder` is created if missing. Frames of an earlier export (files named
    `{prefix}_NNNN.png`) are a set: without `overwrite` any of them refuses the export and
    nothing is written; with it, the new frames replace the set, and earlier frames the new
    export does not write (a longer earlier run's last ones) are removed afterwards, with a
    warning naming them. Other files in `folder` are never touched. Returns the paths, in order.
    """
    frames = _as_images(images)
    folder = Path(folder)
    digits = max(4, len(str(len(frames) - 1)))
    paths = [folder / f"{prefix}_{i:0{digits}d}.png" for i in range(len(frames))]
    for path in paths:
        _check_target(path, overwrite)
    earlier = [] if overwrite else frame_files(folder, prefix)
    if earlier:
        raise FileExistsError(
            f"{folder} holds {describe_frames(earlier)} of an earlier export; pass "
            "overwrite=True to replace that set, or choose another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _io.remove_orphans(folder)
    for frame, path in zip(frames, paths, strict=True):
        _io.write_file(
            path, lambda tmp, frame=frame: frame.save(tmp, format="PNG"), overwrite=overwrite
        )
    removed = remove_stale_frames(folder, paths, prefix)
    if removed:
        warnings.warn(
            f"removed {describe_frames(removed)} of an earlier export from {folder}", stacklevel=2
        )
    return paths


def frame_files(folder: str | os.PathLike, prefix: str = "loop") -> list[Path]:
    """The files in `folder` named as `save_png_frames` names frames (``{prefix}_NNNN.png``,
    4 or more digits), sorted; folders of such a name are not frames and are left out.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("loop_0000.png", "loop_12345.png", "loop_1.png", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [p.name for p in frame_files(folder)]
        ['loop_0000.png', 'loop_12345.png']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"_\d{4,}\.png")
    found = [
        entry
        for entry in folder.iterdir()
        if pattern.fullmatch(entry.name) and (entry.is_symlink() or not entry.is_dir())
    ]
    return sorted(found)


def remove_stale_frames(
    folder: str | os.PathLike, written: Sequence[Path], prefix: str = "loop"
) -> list[Path]:
    """Remove the frames (`frame_files`) in `folder` that are not in `written`: what an earlier,
    longer export left. Returns the removed paths, sorted."""
    keep = {Path(path).name for path in written}
    removed = [path for path in frame_files(folder, prefix) if path.name not in keep]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def describe_frames(paths: Sequence[Path]) -> str:
    """``"3 frames (loop_0003.png to loop_0005.png)"``: a count and the first and last names.

    Example:
        >>> describe_frames([Path("loop_0003.png"), Path("loop_0004.png")])
        '2 frames (loop_0003.png to loop_0004.png)'
        >>> describe_frames([Path("out/loop_0007.png")])
        '1 frame (loop_0007.png)'
    """
    names = sorted(Path(path).name for path in paths)
    if len(names) == 1:
        return f"1 frame ({names[0]})"
    return f"{len(names)} frames ({names[0]} to {names[-1]})"


def _font_for_text(font, text: str) -> str:
    """Pillow's bitmap fallback font is latin-1 only: replace what it cannot draw."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _longest_prefix(font, text: str, width: int, suffix: str = "") -> int:
    """The length of the longest prefix ``p`` of ``text`` with ``p + suffix`` within ``width``
    pixels: a binary search, so a 10,000-character word costs ~14 measures, not 10,000."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + suffix) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def _fit(font, text: str, width: int) -> str:
    """`text` cut with "..." so it fits in `width` pixels."""
    if len(text) <= _measurable(width) and font.getlength(text) <= width:
        return text
    text = text[: _measurable(width)]
    return text[: _longest_prefix(font, text, width, "...")].rstrip() + "..."


def _measurable(width: int) -> int:
    # No glyph a caption draws is narrower than 1/4 pixel: more characters than this can never
    # fit, and measuring them only costs time (and Pillow refuses very long texts).
    return 4 * max(width, 1) + 16


def _wrap(font, caption: str, width: int, max_lines: int) -> list[str]:
    """Word-wrap each line of `caption` to `width` pixels; at most `max_lines`, ellipsised.

    Linear in the caption's length: a word too long for a line is cut to what can fit, and
    wrapping stops at the first line beyond `max_lines`.
    """
    lines: list[str] = []
    cap = _measurable(width)
    for paragraph in caption.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            word = word[:cap]
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word wider than a line (a URL, text without spaces) is broken across lines.
            while font.getlength(word) > width and len(lines) <= max_lines:
                cut = max(1, _longest_prefix(font, word, width))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
            if len(lines) > max_lines:
                break
        lines.append(line)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(font, lines[-1] + " ...", width)
    return [_fit(font, line, width) for line in lines]


_PAD = 4  # pixels around and between a contact sheet's cells


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag|y")
    return bottom - min(top, 0) + 2


def _sheet_size(count: int, columns: int, step: tuple[int, int]) -> tuple[int, int]:
    """A sheet's pixels: ``count`` cells of ``step`` (image and caption band), in a grid."""
    rows = math.ceil(count / columns)
    return columns * (step[0] + _PAD) + _PAD, rows * (step[1] + _PAD) + _PAD


def check_contact_sheet(
    count: int, image_size: tuple[int, int], *, caption_lines: int = 3, lower: str = "the size"
) -> None:
    """Refuse, before any image exists, a default `contact_sheet` of ``count`` images of
    ``image_size`` with up to ``caption_lines`` caption lines that would not fit in memory
    (a `ValueError` that says to lower ``lower``), so a long run does not end in that refusal.

    Example:
        >>> check_contact_sheet(20, (512, 512))  # about 2,600 x 3,000 pixels: fits
    """
    cell_w, cell_h = _default_cell_for(*image_size)
    band = caption_lines * _line_height(ImageFont.load_default()) + _PAD
    columns = math.ceil(math.sqrt(count))
    width, height = _sheet_size(count, columns, (cell_w, cell_h + band))
    check_image_memory(width, height, "contact sheet", lower)


def _default_cell(images: list[Image.Image]) -> tuple[int, int]:
    return _default_cell_for(
        max(image.width for image in images), max(image.height for image in images)
    )


def _default_cell_for(width: int, height: int) -> tuple[int, int]:
    """The largest image, upscaled by a whole factor (up to 4x) towards ~160 px if tiny, or
    scaled down to `MAX_CELL` if huge."""
    factor = max(1, min(4, 160 // max(width, height)))
    if max(width, height) > MAX_CELL:  # a huge image is shown smaller, never refused
        return max(1, width * MAX_CELL // max(width, height)), max(
            1, height * MAX_CELL // max(width, height)
        )
    return width * factor, height * factor


def _check_whole(name: str, value, high: int, *, whole=None) -> None:
    """A `ValueError` naming ``name`` unless ``value`` is a whole number from 1 to ``high``;
    ``whole`` is the argument as given when ``value`` is one of a ``(width, height)`` pair."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= high:
        pair = "" if whole is None else ", or a (width, height) pair of them"
        shown = value if whole is None else whole
        raise ValueError(
            f"{name}: {short_repr(shown)} is not allowed; allowed: a whole number from 1 to "
            f"{high}{pair}"
        )


def _warn_over_pillows_limit(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > 2 * limit:
        warnings.warn(
            f"contact sheet: {width}x{height} pixels is over twice Pillow's decompression-bomb "
            f"limit ({limit:,} pixels), so Pillow (and tools built on it) will refuse to open "
            "it; lower cell or columns for a sheet they can read",
            stacklevel=3,
        )


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str | Sequence[str]] | None = None,
    *,
    columns: int | None = None,
    cell: int | tuple[int, int] | None = None,
    max_caption_lines: int = 3,
    background: tuple[int, int, int] = (255, 255, 255),
    text_color: tuple[int, int, int] = (20, 20, 20),
) -> Image.Image:
    """A grid of images, each with its caption below it.

    Args:
        images (`Sequence[PIL.Image.Image]`): the images; sizes may differ (each is fitted
            into the cell, centred).
        captions (`Sequence[str | Sequence[str]]`, *optional*): one per image: a string (lines
            split on newlines) or a list of lines, e.g. `["loop 3 · seed 42", "a red circle"]`.
            Lines are word-wrapped to the cell width; beyond `max_caption_lines` they are cut
            with "...".
        columns (`int`, *optional*): 1 to `MAX_COLUMNS` (1,024); defaults to
            `ceil(sqrt(len(images)))`.
        cell (`int` or `tuple[int, int]`, *optional*): the image area of a cell, `(width,
            height)`, each 1 to `MAX_CELL` (4,096) pixels. Defaults to the largest image's size, upscaled by a whole factor (NEAREST,
            at most 4x) towards 160 px, so a 64x64 image becomes 128x128 and stays legible.
        max_caption_lines (`int`, defaults to 3): caption lines per cell, 1 to
            `MAX_CAPTION_LINES` (100).
        background, text_color (`tuple[int, int, int]`): RGB colours.

    Returns:
        `PIL.Image.Image`: the RGB sheet.
    """
    frames = _as_images(images, same_size=False)
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"got {len(captions)} captions for {len(frames)} images")
    if columns is None:
        columns = math.ceil(math.sqrt(len(frames)))
    _check_whole("columns", columns, MAX_COLUMNS)
    _check_whole("max_caption_lines", max_caption_lines, MAX_CAPTION_LINES)
    if cell is None:
        cell = _default_cell(frames)
    if isinstance(cell, (tuple, list)) and len(cell) == 2:
        cell_w, cell_h = cell
    else:
        cell_w = cell_h = cell
    for value in (cell_w, cell_h):
        _check_whole("cell", value, MAX_CELL, whole=cell)

    font = ImageFont.load_default()
    pad = _PAD
    line_h = _line_height(font)
    wrapped: list[list[str]] = []
    if captions is not None:
        for caption in captions:
            text = caption if isinstance(caption, str) else "\n".join(caption)
            wrapped.append(_wrap(font, _font_for_text(font, text), cell_w, max_caption_lines))
    band_h = max((len(lines) for lines in wrapped), default=0) * line_h
    band_h += pad if band_h else 0

    step_w, step_h = cell_w + pad, cell_h + band_h + pad
    width, height = _sheet_size(len(frames), columns, (cell_w, cell_h + band_h))
    check_image_memory(width, height, "contact sheet", "cell or columns")
    _warn_over_pillows_limit(width, height)
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    for i, frame in enumerate(frames):
        x0 = pad + (i % columns) * step_w
        y0 = pad + (i // columns) * step_h
        fitted = thumbnail(frame, (cell_w, cell_h))
        sheet.paste(fitted, (x0 + (cell_w - fitted.width) // 2, y0 + (cell_h - fitted.height) // 2))
        for j, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x0, y0 + cell_h + pad + j * line_h), line, fill=text_color, font=font)
    return sheet


def save_contact_sheet(
    images: Sequence[Image.Image],
    path: str | os.PathLike,
    captions: Sequence[str | Sequence[str]] | None = None,
    *,
    columns: int | None = None,
    cell: int | tuple[int, int] | None = None,
    overwrite: bool = False,
    **options,
) -> Path:
    """Write `contact_sheet(images, captions, columns=..., cell=..., **options)` to `path`.

    The format follows the suffix (PNG recommended: lossless). Refuses to replace an existing
    file unless `overwrite=True`.
    """
    path = _check_target(path, overwrite)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image format for {path} (use .png)")
    sheet = contact_sheet(images, captions, columns=columns, cell=cell, **options)
    return _write_atomic(path, lambda tmp: sheet.save(tmp, format=fmt), overwrite)
