"""A very small strided CNN: two Conv layers with stride 2 and ReLU, then a
global average over the length axis and a linear read-out.
2,354 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):

    @nn.compact
    def __call__(self, x):
        x = x[:, :, None]
        x = nn.relu(nn.Conv(16, (9,), strides=2)(x))  # 40 -> 20
        x = nn.relu(nn.Conv(24, (5,), strides=2)(x))  # 20 -> 10
        x = jnp.mean(x, axis=1)
        return nn.Dense(10)(x)
