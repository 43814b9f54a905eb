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
