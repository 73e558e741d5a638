"""A wide residual MLP: Dense(224) embedding, three pre-LayerNorm residual
blocks (LayerNorm -> Dense(224) -> SiLU -> Dense(224)), final LayerNorm,
Dense(10). 315,626 parameters.
"""
import flax.linen as nn


class ResidualBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = nn.silu(nn.Dense(self.width)(y))
        return x + nn.Dense(self.width)(y)


class Model(nn.Module):
    width: int = 224
    blocks: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width)(x)
        for _ in range(self.blocks):
            x = ResidualBlock(self.width)(x)
        return nn.Dense(10)(nn.LayerNorm()(x))
