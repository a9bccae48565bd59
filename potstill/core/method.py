"""The :class:`Method` base class: every distillation method is one subclass in ``methods/``.

A method owns all trainable state (a student, a projector, synthetic images, a critic ...),
names its parameter groups, and returns one scalar loss per group. The trainer gives each group
its own optimizer, schedule and update frequency, and backpropagates each group's loss into that
group's parameters only (``backward(inputs=...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from .registry import Spec


class Method(nn.Module):
    """Subclass, set the class attributes, implement :meth:`param_groups`, :meth:`loss`, :meth:`export`.

    Keys of the dict returned by :meth:`loss` are group names (one scalar each); keys starting
    with ``log/`` are only logged. Methods that need an unusual update (unrolled inner loops,
    alternating updates within a step) override :meth:`train_step` instead.
    """

    Config: ClassVar[type]
    name: ClassVar[str] = ""
    pillar: ClassVar[str] = ""          # "kd", "dataset" or "generative"
    catalog_ids: ClassVar[tuple[str, ...]] = ()
    paper: ClassVar[str] = ""
    arxiv: ClassVar[str] = ""
    #: teacher outputs may be cached per training example (no randomness in the teacher's input)
    cacheable_teacher: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: Any, ctx: "BuildContext") -> "Method":
        """Create the method from a recipe context. Default: a student and a teacher."""
        return cls(cfg, student=ctx.student(), teacher=ctx.teacher())

    def train_data(self, bundle) -> Any:
        """The examples batches are drawn from (default: the labelled training split)."""
        return bundle.train

    # --- the three things a method must say --------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def export(self) -> nn.Module:
        raise NotImplementedError

    # --- optional ------------------------------------------------------------------------------
    train_step = None  # set to a callable (batch, step, trainer) -> logs to take over the update

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512) -> dict[str, float]:
        """Default for classifiers: accuracy and mean cross-entropy of the exported model."""
        from ..eval.classification import evaluate_classifier

        return evaluate_classifier(self.export(), data, batch_size)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the state dict without the frozen teacher."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    @classmethod
    def info(cls) -> dict:
        return {"name": cls.name, "pillar": cls.pillar, "catalog_ids": list(cls.catalog_ids),
                "paper": cls.paper, "arxiv": cls.arxiv, "summary": (cls.__doc__ or "").strip().splitlines()[0]}


@dataclass
class BuildContext:
    """What a method may ask for while being built: the data and the (already chosen) networks."""

    data: Any                                   # DataBundle
    student_spec: Spec | None = None
    teacher_spec: Any = None                    # TeacherConfig
    student_module: nn.Module | None = None     # from the Python API
    teacher_module: nn.Module | None = None

    def student(self) -> nn.Module:
        if self.student_module is not None:
            return self.student_module
        if self.student_spec is None:
            from .config import ConfigError

            raise ConfigError("this method needs a student: add a 'student: {name: <model>, ...}' section")
        from ..models import build_model

        return build_model(self.student_spec, self.data.in_shape, self.data.num_classes, "student")

    def teacher(self, taps: tuple[str, ...] | list[str] = (), key: str = "teacher taps"):
        from .teacher import Teacher, load_teacher

        if self.teacher_module is not None:
            return Teacher(self.teacher_module, taps, key)
        if self.teacher_spec is None:
            from .config import ConfigError

            raise ConfigError("this method needs a teacher: add a 'teacher: {model: {...}, checkpoint: ...}' section")
        return load_teacher(self.teacher_spec, self.data, taps, key)
