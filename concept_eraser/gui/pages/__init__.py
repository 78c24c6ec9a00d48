"""The wizard's steps, one Page per file, in order."""

from .compare import ComparePage
from .export import ExportPage
from .forget import ForgetPage
from .keep import KeepPage
from .method import MethodPage
from .model import ModelPage
from .run import RunPage

PAGE_CLASSES = (ModelPage, ForgetPage, KeepPage, MethodPage, RunPage, ComparePage, ExportPage)

__all__ = ["PAGE_CLASSES", "ComparePage", "ExportPage", "ForgetPage", "KeepPage", "MethodPage", "ModelPage", "RunPage"]
