"""Leaky-ReLU CNN that downsamples by strided slicing (`x[:, ::2]`) instead of
pooling: Conv(30, 7) -> keep every other step -> Conv(60, 5) -> every other
step -> Conv(60, 3) -> flatten -> Dense(256) -> Dense(10).
176,586 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    slope: float = 0.1

    @nn.compact
    def __call__(self, x):
        x = x[:, :, None]
        x = nn.leaky_relu(nn.Conv(30, (7,))(x), self.slope)
        x = x[:, ::2]  # 40 -> 20
        x = nn.leaky_relu(nn.Conv(60, (5,))(x), self.slope)
        x = x[:, ::2]  # 20 -> 10
        x = nn.leaky_relu(nn.Conv(60, (3,))(x), self.slope)
        x = x.reshape((x.shape[0], -1))
        x = nn.leaky_relu(nn.Dense(256)(x), self.slope)
        return nn.Dense(10)(x)
