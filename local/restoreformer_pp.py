"""RestoreFormer++ (Wang et al., TPAMI 2023), for which spandrel (0.4.2, the newest) has no architecture.

It is RestoreFormer's network (spandrel builds that) with two changes, read from the authors' code
(wzhouxiff/RestoreFormerPlusPlus, `VQVAEGANMultiHeadTransformer(head_size=4, ex_multi_scale_num=1)`):
every attention has 4 heads (RestoreFormer: 8), and the decoder also cross-attends one level up (32 px
as well as 16), where the encoder has no attention: there its keys and values come from the encoder's
feature of that level, before it was downsampled. The released `RestoreFormer++.ckpt` (and that repo's
`RestoreFormer.ckpt`) hold the network under `vqvae.` beside training-only tensors.
"""
from ..host import weights

HEADS = 4
PREFIX = "vqvae."


def network(state):
    """The restorer's own tensors of a state dict: inside the usual wrappers, and where they are under
    `vqvae.`, those alone with the prefix removed (the loss's networks of a training checkpoint dropped)."""
    state = weights.unwrap(state)
    if any(name.startswith(PREFIX) for name in state):
        return {name[len(PREFIX):]: value for name, value in state.items() if name.startswith(PREFIX)}
    return state


def extra_levels(names):
    """The decoder levels that attend where the encoder has no attention (RestoreFormer++: the 32 px one)."""
    decoder = {int(n.split(".")[2]) for n in names if n.startswith("decoder.up.") and ".attn." in n}
    encoder = {int(n.split(".")[2]) for n in names if n.startswith("encoder.down.") and ".attn." in n}
    return sorted(decoder - encoder)


def build(state):
    """A RestoreFormer++ network with the tensors of `state` (its network's, see `network`), loaded strictly;
    called as RestoreFormer is: `net(x)[0]`, x RGB in [-1, 1]."""
    import torch
    from spandrel.architectures.RestoreFormer import RestoreFormerArch
    from spandrel.architectures.RestoreFormer.__arch.restoreformer_arch import MultiHeadAttnBlock

    levels = extra_levels(state)
    if not levels:
        raise ValueError("no decoder attention beyond the encoder's: a RestoreFormer file, not RestoreFormer++")
    extra = tuple(f"decoder.up.{i}.attn." for i in levels)
    net = RestoreFormerArch().load({k: v for k, v in state.items() if not k.startswith(extra)}).model
    for block in net.modules():
        if isinstance(block, MultiHeadAttnBlock):
            block.head_size, block.att_size = HEADS, block.in_channels // HEADS
    for i, prefix in zip(levels, extra):
        up = net.decoder.up[i]
        up.attn = torch.nn.ModuleList(MultiHeadAttnBlock(block.conv2.out_channels, HEADS) for block in up.block)
        up.attn.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    class RestoreFormerPP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            quant, _, _, features = self.net.encode(x)
            for i in levels:  # the decoder reads block_<i>_atten; ++ attends to block_<i> where that is absent
                features[f"block_{i}_atten"] = features[f"block_{i}"]
            return self.net.decode(quant, features), None

    return RestoreFormerPP().eval()
