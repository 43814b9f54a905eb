"""Progress: ComfyUI's ProgressBar inside the host, tqdm outside it. Every step
also checks for cancel, so a loop that reports progress stops within one step."""
from . import cancel, comfy


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

    def step(self, n=1, preview=None):
        """Raise the host's interrupt if the user pressed cancel, else advance `n` steps
        (`preview`: a PIL image ComfyUI shows on the node while it runs)."""
        cancel.check_cancel()
        if self._bar is not None:
            if preview is not None:
                self._bar.update_absolute(self._bar.current + n, self.total, ("JPEG", preview, 512))
            else:
                self._bar.update(n)
        else:
            self._tqdm.update(n)

    def set(self, value):
        """Raise the host's interrupt if the user pressed cancel, else show `value` of `total` done."""
        cancel.check_cancel()
        value = min(max(int(value), 0), self.total)
        if self._bar is not None:
            self._bar.update_absolute(value, self.total)
        else:
            self._tqdm.update(value - self._tqdm.n)

    def text(self, message):
        """`message` under the running node in ComfyUI's editor (its progress text); nothing outside it."""
        server = comfy.module("server")
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        if instance is None:
            return
        context = comfy.module("comfy_execution.utils")
        running = context.get_executing_context() if context is not None else None
        node = running.node_id if running is not None else instance.last_node_id
        if node is not None:
            instance.send_progress_text(message, node)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
