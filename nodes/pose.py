"""PF_OpenPoseExtract and PF_PoseRender.

There is no Segmind pose endpoint: Segmind's pose models extract the pose
themselves, so a Segmind sampler is sent the source photo carried in PF_POSE.
"""
import json

from ..engines import backend as policy
from ..host import images
from ..host.progress import Progress


def _pose_bundle(maps, keypoints, source, **draw):
    """PF_POSE: the rendered maps (local samplers), keypoints, source photos (Segmind) and how the maps
    were drawn (so a sampler of another output shape can draw the keypoints again alike)."""
    return {"map": maps, "keypoints": keypoints, "source": source, "draw": draw}


_STICK_WIDTH = ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": (
    "limb half-width in pixels of the drawing canvas (short side = resolution): 4 is controlnet-aux's "
    "look, which the OpenPose ControlNets were trained on; 8-12 gives xinsir-style thicker sticks")})


class PF_OpenPoseExtract:
    NODE_ID = "PF_OpenPoseExtract"
    DISPLAY_NAME = "OpenPose Extract (PoseForge)"
    CATEGORY = "PoseForge/pose"
    RETURN_TYPES = ("IMAGE", "POSE_KEYPOINT", "PF_POSE")
    RETURN_NAMES = ("pose_map", "keypoints", "pose")
    FUNCTION = "extract"
    DESCRIPTION = ("OpenPose body, hands and face from a batch of photos (controlnet-aux, local). "
                   "Weights: body_pose_model.pth, hand_pose_model.pth, facenet.pth in models/openpose.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "detect_body": ("BOOLEAN", {"default": True}),
            "detect_hands": ("BOOLEAN", {"default": False}),
            "detect_face": ("BOOLEAN", {"default": False}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                   "tooltip": "short side the detector works at; the map has the input's size"}),
            "stick_width": _STICK_WIDTH,
        }}

    def extract(self, image, detect_body=True, detect_hands=False, detect_face=False, resolution=512,
                stick_width=4):
        from ..local import openpose, pose_render

        photos = images.to_uint8(image, "image")
        det = openpose.detector(hands=detect_hands, face=detect_face)
        frames, maps = [], []
        with Progress(len(photos), "OpenPose") as bar:
            for photo in photos:
                frame = openpose.extract(det, photo, resolution, hands=detect_hands, face=detect_face)
                frames.append(frame)
                maps.append(pose_render.render_frame(frame, body=detect_body, hands=detect_hands, face=detect_face,
                                                     stick_width=stick_width, short_side=resolution))
                bar.step()
        pose_map = images.from_uint8(maps)
        source = images.from_uint8(photos)
        ui = policy.report(self.NODE_ID, "local", people=[len(f["people"]) for f in frames])
        return {"ui": dict(ui, openpose_json=[json.dumps(frames)]),
                "result": (pose_map, frames, _pose_bundle(pose_map, frames, source, body=detect_body,
                                                          hands=detect_hands, face=detect_face,
                                                          stick_width=stick_width, short_side=resolution))}


class PF_PoseRender:
    NODE_ID = "PF_PoseRender"
    DISPLAY_NAME = "Pose Render (PoseForge)"
    CATEGORY = "PoseForge/pose"
    RETURN_TYPES = ("IMAGE", "PF_POSE")
    RETURN_NAMES = ("pose_map", "pose")
    FUNCTION = "render"
    DESCRIPTION = ("Draw OpenPose maps from POSE_KEYPOINT (normalized or pixel coordinates, e.g. from "
                   "controlnet_aux, DWPose, ComfyUI's pose nodes or an editor).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "keypoints": ("POSE_KEYPOINT",),
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "0: the canvas width"}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "0: the canvas height"}),
            "draw_body": ("BOOLEAN", {"default": True}),
            "draw_hands": ("BOOLEAN", {"default": True}),
            "draw_face": ("BOOLEAN", {"default": True}),
            "stick_width": _STICK_WIDTH,
            "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                "points whose confidence is at or below this are not drawn (DWPose and other estimators "
                "write a raw score for every point)")}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64, "tooltip": (
                "short side of the canvas the map is drawn on before it is resized to the output, as "
                "controlnet-aux does at its detect resolution")}),
        }}

    def render(self, keypoints, width=0, height=0, draw_body=True, draw_hands=True, draw_face=True, stick_width=4,
               threshold=0.0, resolution=512):
        from ..local import pose_render

        frames = [keypoints] if isinstance(keypoints, dict) else list(keypoints or [])
        if not frames:
            raise pose_render.KeypointError("POSE_KEYPOINT is empty: no frames to draw")
        maps = [pose_render.render_frame(f, width, height, draw_body, draw_hands, draw_face, stick_width, threshold,
                                         resolution) for f in frames]
        if len({m.shape for m in maps}) > 1:
            raise pose_render.KeypointError("frames have different canvas sizes; set width and height to draw "
                                            "them as one batch")
        pose_map = images.from_uint8(maps)
        return (pose_map, _pose_bundle(pose_map, frames, None, body=draw_body, hands=draw_hands, face=draw_face,
                                       stick_width=stick_width, threshold=threshold, short_side=resolution))


NODES = (PF_OpenPoseExtract, PF_PoseRender)
