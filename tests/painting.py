"""A painter that records what a widget asks it to draw (the strip and the timeline speak the
same drawing vocabulary to ipycanvas and to Pillow)."""


class PaintRecorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def markers(self, color) -> list[tuple[float, float]]:
        """The centres of the strip's point markers (4-pixel squares) drawn in ``color``."""
        squares = [args for name, args, _ in self.calls if name == "squares"]
        return [
            xy for centres, side, fill in squares if (side, fill) == (4, color) for xy in centres
        ]
