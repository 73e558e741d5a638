"""Depthwise-separable CNN: each SepConv is a depthwise Conv
(`feature_group_count` = channels, kernel 9) followed by a pointwise Conv.
Stem Conv(48, 3), three SepConv(48 -> 96 -> 96) with average pooling, mean
over length, Dense(10). 19,450 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class SepConv(nn.Module):
    """Depthwise conv (one filter per channel), then a 1x1 conv mixing channels."""
    features: int
    kernel: int = 9

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        x = nn.Conv(channels, (self.kernel,), feature_group_count=channels)(x)
        x = nn.Conv(self.features, (1,))(x)
        return nn.relu(x)


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(48, (3,))(x[:, :, None]))
        x = SepConv(48)(x)
        x = nn.avg_pool(x, (2,), (2,))
        x = SepConv(96)(x)
        x = nn.avg_pool(x, (2,), (2,))
        x = SepConv(96)(x)
        return nn.Dense(10)(jnp.mean(x, axis=1))
