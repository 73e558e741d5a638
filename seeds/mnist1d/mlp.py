"""The Greydanus (2020) residual MLP baseline for MNIST-1D (Listing 5).

Dense(100) + ReLU, a residual step `x + ReLU(Dense(100)(x))`, Dense(10).
15,210 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    hidden: int = 100

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(features=self.hidden)(x)
        x = nn.relu(x)
        x = x + nn.relu(nn.Dense(features=self.hidden)(x))
        x = nn.Dense(features=10)(x)
        return x
