"""Progress: ComfyUI's ProgressBar inside the host, tqdm outside it."""
from . import comfy


class Progress:
    """A progress bar of `total` steps, shown in ComfyUI's UI or as tqdm."""

    def __init__(self, total, desc="PoseForge"):
        self.total = max(int(total), 1)
        utils = comfy.module("comfy.utils")
        if utils is not None:
            self._bar = utils.ProgressBar(self.total)
            self._tqdm = None
        else:
            from tqdm import tqdm

            self._bar = None
            self._tqdm = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, n=1):
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._tqdm.update(n)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
