import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import potstill  # noqa: E402,F401

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    return potstill.load_dataset({"name": "digits"})


@pytest.fixture
def tiny_trainer():
    return make_tiny_trainer


def make_tiny_trainer(**kw):
    base = {"steps": 3, "batch_size": 16, "progress": False, "log_every": 1, "threads": 1,
            "optim": {"default": {"name": "adam", "lr": 1e-2}}}
    base.update(kw)
    return potstill.core.config.from_dict(potstill.TrainerConfig, base, "trainer")


class UniformLM(torch.nn.Module):
    """A language model that gives every token the same probability (log-perplexity known by hand)."""

    def __init__(self, v):
        super().__init__()
        self.v, self.w = v, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(*x.shape, self.v)


@pytest.fixture
def uniform_lm():
    return UniformLM


TINY_LM = {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}


@pytest.fixture(scope="session")
def arith_text():
    """A tiny arithmetic text bundle for the LM method tests."""
    return potstill.load_dataset({"name": "arithmetic", "train_size": 100, "val_size": 10, "test_size": 10,
                                  "block_size": 16})


def build_lm_method(name, text, student=None, teacher=None, **cfg):
    """An LM method with tiny random GPTs (seeded) as student and teacher unless given."""
    from potstill.core.method import BuildContext
    from potstill.models import build_model

    torch.manual_seed(0)
    teacher = teacher or build_model(TINY_LM, text.in_shape, text.num_classes)
    student = student or build_model(TINY_LM, text.in_shape, text.num_classes)
    cls = potstill.METHODS.get(name)
    return cls.build(cls.Config(**cfg), BuildContext(data=text, student_module=student, teacher_module=teacher))


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory):
    """A 5-step toy2d EDM teacher run: the checkpoint the generative recipes' smoke tests distil from."""
    from pathlib import Path

    out = tmp_path_factory.mktemp("toy2d_teacher") / "edm"
    potstill.run_recipe(Path(__file__).resolve().parents[1] / "recipes/gen/edm_toy2d.yaml", out,
                        ["trainer.steps=5", "trainer.progress=false", "trainer.threads=1", "trainer.eval_every=0",
                         "trainer.batch_size=64", "student.hidden=32", "student.depth=2", "data.train_size=500",
                         "data.val_size=64", "data.test_size=64"])
    return out
