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


def save_restoreformer(folder, name="RestoreFormer.pth"):
    """A RestoreFormer state dict (random weights) at a tiny width: spandrel reads its sizes from the tensors
    (the depth of six levels, the 16-pixel attention and 512-pixel faces are RestoreFormer's own)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    net = RestoreFormer(n_embed=32, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                        z_channels=32)  # 32: GroupNorm's groups
    torch.save(net.state_dict(), os.path.join(folder, name))
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
