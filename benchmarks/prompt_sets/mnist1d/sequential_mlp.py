"""A plain MLP written with nn.Sequential: 40 -> 96 -> 72 -> 10 with GELU.
11,650 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        net = nn.Sequential([
            nn.Dense(96), nn.gelu,
            nn.Dense(72), nn.gelu,
            nn.Dense(10),
        ])
        return net(x)
