"""A training loader that stops as a killed run would, for the resume tests."""

from gattanet.data.loader import TensorLoader


class Interrupted(TensorLoader):
    """Raises when epoch `at` starts (None: never), as a killed run would stop."""

    def __init__(self, *args, at: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def epoch(self, e):
        if e == self.at:
            raise KeyboardInterrupt(f"killed at epoch {e}")
        yield from super().epoch(e)
