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
