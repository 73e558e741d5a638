"""Three GELU convolutions of growing width (37, 56, 72) with shrinking kernels,
global max over the length axis, Dense(10). No class fields.
23,610 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):

    @nn.compact
    def __call__(self, x):
        x = jnp.expand_dims(x, -1)
        x = nn.gelu(nn.Conv(features=37, kernel_size=(7,))(x))
        x = nn.gelu(nn.Conv(features=56, kernel_size=(5,))(x))
        x = nn.gelu(nn.Conv(features=72, kernel_size=(3,))(x))
        x = jnp.max(x, axis=1)  # global max pool over positions
        return nn.Dense(features=10)(x)
