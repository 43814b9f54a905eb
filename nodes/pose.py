"""PF_OpenPoseExtract and PF_PoseRender (engines/pose.py). There is no Segmind pose endpoint:
Segmind's pose models extract the pose themselves, so a Segmind sampler is sent the source
photo carried in PF_POSE."""
import json

from ..engines import backend, pose as engine


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
    DESCRIPTION = ("Body, hands and face from a batch of photos, local: OpenPose (controlnet-aux's networks: "
                   "body_pose_model.pth, hand_pose_model.pth, facenet.pth) or DWPose (yolox_l + dw-ll_ucoco_384, "
                   "ONNX, or TorchScript with POSEFORGE_ALLOW_TORCHSCRIPT=1), all in models/openpose.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "detect_body": ("BOOLEAN", {"default": True}),
            "detect_hands": ("BOOLEAN", {"default": False}),
            "detect_face": ("BOOLEAN", {"default": False}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64, "tooltip": (
                "short side the map is drawn at (and OpenPose detects at); the map has the input's size")}),
            "stick_width": _STICK_WIDTH,
        }, "optional": {  # optional, so that graphs saved before it existed still run (as OpenPose)
            "detector": (engine.DETECTORS, {"default": engine.default_detector(), "tooltip": (
                "openpose: the 2017 networks. dwpose: whole-body DWPose, markedly better hands and faces, faster "
                "(yolox_l + dw-ll_ucoco_384 as ONNX, with onnxruntime; TorchScript only with POSEFORGE_ALLOW_TORCHSCRIPT=1, "
                "as it runs code when loaded)")}),
        }}

    def extract(self, image, detect_body=True, detect_hands=False, detect_face=False, resolution=512,
                stick_width=4, detector="openpose"):
        pose_map, frames, pose, people = engine.extract(image, detector, detect_body, detect_hands, detect_face,
                                                        resolution, stick_width)
        ui = backend.report(self.NODE_ID, "local", detector=detector, people=people)
        return {"ui": dict(ui, openpose_json=[json.dumps(frames)]), "result": (pose_map, frames, pose)}


class PF_PoseRender:
    NODE_ID = "PF_PoseRender"
    DISPLAY_NAME = "Pose Render (PoseForge)"
    CATEGORY = "PoseForge/pose"
    RETURN_TYPES = ("IMAGE", "PF_POSE")
    RETURN_NAMES = ("pose_map", "pose")
    FUNCTION = "render"
    DESCRIPTION = ("Draw OpenPose maps from POSE_KEYPOINT (normalized or pixel coordinates, e.g. from "
                   "controlnet_aux, DWPose, ComfyUI's pose nodes or an editor), or from the pose edited on the "
                   "node: move, turn and scale joints, limbs and whole people, hands and face; add or remove "
                   "joints and people, flip, undo; frames of a batch; canvas size; a pose library in your "
                   "ComfyUI user data; a connected OpenPose Extract's result or a pose file, saved as a file.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
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
        }, "optional": {
            "keypoints": ("POSE_KEYPOINT", {"tooltip": "drawn unless a pose was edited on the node"}),
            "pose": ("STRING", {"default": "", "tooltip": (
                "the pose edited on the node (POSE_KEYPOINT JSON, normalized coordinates); when it is set it "
                "is drawn instead of keypoints. The editor keeps it; clear it there to draw keypoints again.")}),
        }}

    def render(self, keypoints=None, width=0, height=0, draw_body=True, draw_hands=True, draw_face=True,
               stick_width=4, threshold=0.0, resolution=512, pose=""):
        pose_map, bundle, frames = engine.render(keypoints, width, height, draw_body, draw_hands, draw_face,
                                                 stick_width, threshold, resolution, pose)
        return {"ui": {"openpose_json": [json.dumps(frames)]}, "result": (pose_map, bundle)}


class PF_PoseScore:
    NODE_ID = "PF_PoseScore"
    DISPLAY_NAME = "Pose Match Score (PoseForge)"
    CATEGORY = "PoseForge/pose"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("scores", "report")
    OUTPUT_IS_LIST = (True, False)
    FUNCTION = "score"
    DESCRIPTION = ("How well each image kept the pose: the people a detector finds in it against the pose's, joint "
                   "by joint (COCO's keypoint similarity, OKS), matched person to person; a missing or extra person "
                   "lowers it, no person scores 0. One score per image (a list) and a per-joint JSON report.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "pose": ("PF_POSE", {"tooltip": "the pose asked for (its keypoints): one per image, or one for all"}),
            "detector": (["same"] + engine.DETECTORS, {"default": "same", "tooltip": (
                "same: the detector that found the pose (the default one for a pose drawn by hand)")}),
            "pose_fit": (["fit", "crop", "stretch"], {"default": "fit", "tooltip": (
                "how the pose was placed on images of another shape: the sampler's pose_fit")}),
        }}

    def score(self, images, pose, detector="same", pose_fit="fit"):
        scores, report, name = engine.score(images, pose, detector, pose_fit)
        ui = backend.report(self.NODE_ID, "local", detector=name, pose_scores=scores)
        return {"ui": dict(ui, pose_report=[report]), "result": (scores, report)}


NODES = (PF_OpenPoseExtract, PF_PoseRender, PF_PoseScore)
