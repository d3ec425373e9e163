"""Linear warm-up over the first 5% of steps, then cosine decay to zero over the rest."""

import math

import torch


def build_scheduler(optimizer, total_steps):
    warmup = max(1, total_steps // 20)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
