"""K9 quantized distillation and differentiable quantization: levels, gradients, sizes, end to end."""
import pytest
import torch

import potstill
from potstill.models.quantize import nearest_point, packed_bytes, quantize_uniform, straight_through


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_the_quantizer_maps_each_bucket_onto_exactly_2_to_the_b_levels(bits):
    w = torch.randn(4, 256 * 3)
    q = quantize_uniform(w, bits, bucket=256)
    for b in range(12):                                      # 12 buckets of 256 consecutive weights
        vals, chunk = torch.unique(q.reshape(-1)[256 * b:256 * (b + 1)]), w.reshape(-1)[256 * b:256 * (b + 1)]
        levels = chunk.min() + (chunk.max() - chunk.min()) * torch.arange(2 ** bits) / (2 ** bits - 1)
        # every value is one of the 2^b evenly spaced levels between the bucket's min and max ...
        assert ((vals[:, None] - levels[None]).abs().min(1).values < 1e-5).all() and len(vals) <= 2 ** bits
        assert vals[0] == chunk.min() and torch.isclose(vals[-1], chunk.max())
    # ... and with values spread evenly, all 2^b of them are used
    u = torch.linspace(-1, 1, 256)
    assert len(torch.unique(quantize_uniform(u, bits, bucket=256))) == 2 ** bits
    assert (q - w).abs().max() <= (w.max() - w.min()) / (2 ** bits - 1) / 2 + 1e-5


def test_stochastic_rounding_is_unbiased_and_deterministic_rounding_is_nearest():
    w = torch.tensor([0.0, 0.3, 1.0] * 2)
    g = torch.Generator().manual_seed(0)
    mean = torch.stack([quantize_uniform(w, 1, bucket=3, stochastic=True, generator=g) for _ in range(4000)]).mean(0)
    assert torch.allclose(mean, w, atol=0.03)
    assert quantize_uniform(w, 1, bucket=3).tolist() == [0.0, 0.0, 1.0] * 2


def test_gradients_reach_shadow_weights_and_learned_points():
    w = torch.randn(10, requires_grad=True)
    q = quantize_uniform(w, 2, bucket=10)
    up = torch.randn(10)
    (straight_through(w, q) * up).sum().backward()
    assert torch.equal(w.grad, up)                           # dL/dw = dL/dQ(w)
    points = torch.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    v = torch.tensor([-0.9, -0.2, 0.1, 0.8, 0.9])
    (nearest_point(v, points) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert points.grad.tolist() == [1.0, 5.0, 9.0]          # each point: the sum over the weights mapped onto it


def test_packed_size_counts_bits_buckets_and_fp32_rest():
    m = torch.nn.Linear(300, 2)                              # 600 weights (3 buckets of 256), 2 fp32 biases
    assert packed_bytes(m, 4, bucket=256) == 300 + 3 * 8 + 2 * 4


def run(tmp_path, name, method, **kw):
    recipe = {"method": method, "data": {"name": "digits"}, "student": {"name": "mlp", "hidden": [32]},
              "trainer": {"steps": 120, "batch_size": 64, "progress": False, "optim": {"default": {"name": "adam", "lr": 3e-3}}},
              **kw}
    return potstill.core.run.run(potstill.resolve(recipe), tmp_path / name)


def test_quantized_kd_and_diff_quant_end_to_end(tmp_path):
    t = run(tmp_path, "t", {"name": "supervised"})
    teacher = {"model": {"name": "mlp", "hidden": [32]}, "checkpoint": str(tmp_path / "t/export/model.safetensors")}
    q = run(tmp_path, "q", {"name": "quantized_kd", "bits": 2, "bucket": 64}, teacher=teacher)
    assert q["test"]["acc"] > 0.8 and q["test"]["weight_bytes"] < q["test"]["fp32_bytes"] / 8
    model = potstill.load_model(tmp_path / "q")
    w = model.state_dict()["net.0.weight"] if "net.0.weight" in model.state_dict() else next(
        v for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() == 2)
    flat = w.reshape(-1)
    assert all(len(torch.unique(flat[i:i + 64])) <= 4 for i in range(0, len(flat), 64))   # the export is Q(w)
    nll = {}
    for steps in (0, 40):          # the points at the weights' quantiles, then trained by distillation
        d = run(tmp_path, f"d{steps}", {"name": "diff_quant", "bits": 1,
                                        "student_init": str(tmp_path / "t/export/model.safetensors")},
                teacher=teacher, trainer={"steps": steps, "batch_size": 64, "progress": False, "optim": {
                    "points": {"name": "sgd", "lr": 1e-5, "momentum": 0.9, "nesterov": True}}})
        nll[steps] = d["test"]["nll"]
    model = potstill.load_model(tmp_path / "d40")
    kernels = [v for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() == 2]
    assert all(len(torch.unique(v)) <= 2 for v in kernels)                   # 1 bit: two points per tensor
    assert nll[40] < nll[0]                                                  # learning the points helps
