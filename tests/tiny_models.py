"""Random-weight networks saved in the real file formats, for tests and benches."""
import os

import torch


def save_openpose(folder):
    """body_pose_model.pth / hand_pose_model.pth (keys without the block prefix, as
    lllyasviel ships them) and facenet.pth (FaceNet's own keys) in `folder`."""
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    for name, net in (("body_pose_model.pth", bodypose_model()), ("hand_pose_model.pth", handpose_model())):
        flat = {k.split(".", 1)[1]: v for k, v in net.state_dict().items()}
        torch.save(flat, os.path.join(folder, name))
    torch.save(FaceNet().state_dict(), os.path.join(folder, "facenet.pth"))
    return folder


def codeformer_net(small=True):
    """CodeFormer with random weights: `small` shrinks the transformer (the VQ
    encoder/decoder are fixed-size in the architecture); else the released
    hyperparameters."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    if small:
        return CodeFormer(dim_embd=64, n_head=8, n_layers=1, connect_list=["32", "64", "128", "256"])
    return CodeFormer()


def save_codeformer(folder, name="codeformer.pth"):
    """{'params_ema': state_dict} as sczhou/CodeFormer ships it."""
    os.makedirs(folder, exist_ok=True)
    torch.save({"params_ema": codeformer_net().state_dict()}, os.path.join(folder, name))
    return os.path.join(folder, name)


def save_gfpgan(folder, name="GFPGANv1.4.pth"):
    """{'params_ema': state_dict} as TencentARC ships GFPGANv1.4 (random weights; spandrel builds GFPGAN at its
    one released size, so this is real-sized, about 350 MB)."""
    from spandrel.architectures.GFPGAN import GFPGAN

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    torch.save({"params_ema": net.state_dict()}, os.path.join(folder, name))
    return os.path.join(folder, name)


# RestoreFormer at a tiny width: spandrel reads its sizes from the tensors (the depth of six levels, the 16-pixel
# attention and 512-pixel faces are RestoreFormer's own); 32: GroupNorm's groups
TINY_RESTOREFORMER = dict(ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32)


def restoreformer_net():
    """A tiny RestoreFormer with random weights."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    return RestoreFormer(n_embed=32, embed_dim=32, **TINY_RESTOREFORMER).eval()


def save_restoreformer(folder, name="RestoreFormer.pth"):
    """A tiny RestoreFormer's state dict, as TencentARC's RestoreFormer.pth holds it."""
    os.makedirs(folder, exist_ok=True)
    torch.save(restoreformer_net().state_dict(), os.path.join(folder, name))
    return os.path.join(folder, name)


def restoreformer_pp_net(small=True):
    """RestoreFormer++ as its authors build it (`VQVAEGANMultiHeadTransformer(head_size=4,
    ex_multi_scale_num=1)`): RestoreFormer's network with 4 heads, and a decoder with attention at 32 px as
    well as 16 (the encoder's stays at 16); random weights, `small` or at the released widths."""
    from spandrel.architectures.RestoreFormer import RestoreFormer
    from spandrel.architectures.RestoreFormer.__arch.restoreformer_arch import MultiHeadDecoderTransformer

    torch.manual_seed(1)
    sizes = dict(TINY_RESTOREFORMER, out_ch=3, head_size=4)
    if not small:
        sizes.update(ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, z_channels=256)
    net = RestoreFormer(n_embed=32 if small else 1024, embed_dim=32 if small else 256, attn_resolutions=(16,),
                        **sizes)
    net.decoder = MultiHeadDecoderTransformer(attn_resolutions=(16, 32), **sizes)
    return net.eval()


def restoreformer_pp_reference(net, x):
    """What the authors' RestoreFormer++ computes: as RestoreFormer, but a decoder level whose encoder
    feature has no `block_<i>_atten` cross-attends to `block_<i>`."""
    class Features(dict):
        def __missing__(self, name):
            return self[name.removesuffix("_atten")]

    quant, _, _, features = net.encode(x)
    return net.decode(quant, Features(features))


def save_restoreformer_pp(folder, name="RestoreFormer++.ckpt", net=None):
    """As wzhouxiff/RestoreFormerPlusPlus releases it: a Lightning checkpoint whose 'state_dict' holds the
    network under 'vqvae.' beside the training loss's own tensors."""
    os.makedirs(folder, exist_ok=True)
    state = {f"vqvae.{k}": v for k, v in (net or restoreformer_pp_net()).state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.0.8", "state_dict": state},
               os.path.join(folder, name))
    return os.path.join(folder, name)


def save_retinaface(folder):
    """detection_Resnet50_Final.pth with RetinaFace-R50's keys (facexlib layout)."""
    from facexlib.detection.retinaface import RetinaFace

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    net = RetinaFace(network_name="resnet50", device="cpu")
    path = os.path.join(folder, "detection_Resnet50_Final.pth")
    torch.save(net.state_dict(), path)
    return path


def save_parsenet(folder):
    """parsing_parsenet.pth with facexlib's ParseNet keys (random weights)."""
    from facexlib.parsing.parsenet import ParseNet

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    path = os.path.join(folder, "parsing_parsenet.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), path)
    return path
