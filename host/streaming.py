"""Running a network larger than the device's free memory: its blocks streamed from RAM.

The network stays on the offload device (RAM). Its weights are cut into granules — the
largest submodules of at most `limit` bytes, found by descending from the network into
its children — and each granule's weights are copied onto the device just before the
granule runs (a forward pre-hook) and dropped from it just after (a forward hook); what
belongs to no granule (the few small layers a block's parent holds itself) goes onto the
device for the whole phase. The RAM copies are never changed, so nothing is copied back,
and the result is the same computation as with the whole network on the device — the
same image for the same seed. ComfyUI streams its own models layer by layer through its
cast-weight layers; ours are plain torch layers, so this is the equivalent for them.

A network tagged `pf_compute_dtype` (stored in 16 bits, computed wider: the text encoders on
the CPU, as ComfyUI keeps them) has each granule cast as it is brought over, whether it fits
the device or not.
"""
import contextlib

CONTAINERS = ("ModuleList", "ModuleDict", "ParameterList", "ParameterDict")  # never called: not granules


def nbytes(module):
    """Bytes of a module's parameters and buffers (what ComfyUI counts for a model)."""
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def granules(module, limit):
    """(granules, loose): the submodules streamed one at a time, and the tensors (parameters and
    buffers, as (owner, name)) that belong to no granule and stay on the device all phase."""
    found, loose = [], []

    def walk(m, is_root):
        children = list(m.named_children())
        if not is_root and type(m).__name__ not in CONTAINERS and (nbytes(m) <= limit or not children):
            found.append(m)
            return
        loose.extend((m, name) for name, _ in m.named_parameters(recurse=False))
        loose.extend((m, name) for name, _ in m.named_buffers(recurse=False))
        for _, child in children:
            walk(child, False)

    walk(module, True)
    return found, loose


@contextlib.contextmanager
def streamed(nets, dev, limit, on_load=None):
    """Run `nets` (torch modules on the offload device) with their granules streamed onto `dev`;
    `on_load(granule)` is called each time one is brought over (tests count them)."""
    handles, kept = [], []  # kept: (tensor, its RAM data) to put back at the end

    def moved(t, dtype):
        return t.to(dev, dtype) if dtype is not None and t.is_floating_point() else t.to(dev)

    def onto(tensors, dtype):
        for t in tensors:
            t.data = moved(t.pf_ram, dtype)

    def back(tensors):
        for t in tensors:
            t.data = t.pf_ram

    try:
        for net in nets:
            dtype = getattr(net, "pf_compute_dtype", None)  # stored narrower than it computes (see sdxl_file)
            parts, loose = granules(net, limit)
            for owner, name in loose:
                t = getattr(owner, name)
                if t is not None:
                    kept.append((t, t.data))
                    t.data = moved(t.data, dtype)
            for part in parts:
                tensors = list(part.parameters()) + list(part.buffers())
                for t in tensors:
                    t.pf_ram = t.data
                    kept.append((t, t.data))

                def pre(module, args, tensors=tensors, dtype=dtype):
                    onto(tensors, dtype)
                    if on_load:
                        on_load(module)

                def post(module, args, output, tensors=tensors):
                    back(tensors)

                handles.append(part.register_forward_pre_hook(pre))
                handles.append(part.register_forward_hook(post))
        yield tuple(nets)
    finally:
        for h in handles:
            h.remove()
        for t, data in kept:
            t.data = data
            if hasattr(t, "pf_ram"):
                del t.pf_ram
