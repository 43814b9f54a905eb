"""PoseForge: pose-guided SDXL, IP-Adapter and CodeFormer nodes for ComfyUI,
each running locally or on Segmind's hosted API.

Importing the pack is cheap: heavy libraries (controlnet_aux, spandrel,
facexlib, diffusers, ...) load inside the functions that need them.
"""
import logging

from .host import models
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, routes
from .segmind.key import RedactKey

logging.getLogger("PoseForge").addFilter(RedactKey())
models.register_folders()
routes.register()

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
