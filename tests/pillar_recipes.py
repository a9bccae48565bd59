"""One tiny recipe per pillar for fault-injection and torchrun tests (and benchmarks/reliability.py)."""

PILLARS = {
    "kd": """method: {name: supervised, label_smoothing: 0.1}
data: {name: digits}
student: {name: convnet, width: 16, depth: 2}
trainer: {steps: 400, batch_size: 32, ckpt_every: 40, eval_every: 100, log_every: 20, ema_decay: 0.9, threads: 1,
          progress: false, optim: {default: {name: adam, lr: 0.003, schedule: cosine, warmup_steps: 20}}}
""",
    "dd": """method: {name: dm, ipc: 5, batch_real: 64, net: {name: convnet, width: 16, depth: 2, norm: instance, pooling: avg, first_padding: 1}}
data: {name: digits}
trainer: {steps: 240, batch_size: 1, ckpt_every: 30, log_every: 20, threads: 1, progress: false,
          optim: {images: {name: sgd, lr: 1.0, momentum: 0.5}}}
eval: {epochs: 20, seeds: 1, model: {name: convnet, width: 16, depth: 2, norm: instance, pooling: avg, first_padding: 1}}
""",
    "gen": """method: {name: edm, label_dropout: 0.1}
data: {name: toy2d, kind: ring, modes: 8, std: 0.05, train_size: 4000}
student: {name: toy_denoiser, hidden: 64, depth: 2}
trainer: {steps: 600, batch_size: 128, ema_decay: 0.99, ckpt_every: 60, eval_every: 600, log_every: 50, threads: 1,
          progress: false, optim: {denoiser: {name: adam, lr: 0.001, schedule: cosine}}}
""",
    "lm": """method: {name: language_model}
data: {name: arithmetic, digits: 2, train_size: 2000, block_size: 32}
student: {name: gpt, n_layer: 1, n_head: 2, n_embd: 32, dropout: 0.1}
trainer: {steps: 300, batch_size: 32, ckpt_every: 30, eval_every: 300, log_every: 20, threads: 1, progress: false,
          optim: {default: {name: adamw, lr: 0.003, schedule: cosine, grad_clip: 1.0}}}
""",
}
