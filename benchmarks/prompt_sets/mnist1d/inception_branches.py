"""Inception-style 1-D CNN: two inception modules, each concatenating a 1x1
branch, a 1x1 -> k3 branch, a 1x1 -> k7 branch and a max-pool -> 1x1 branch
(`jnp.concatenate` on channels); max pooling between modules, flatten,
Dense(10). 15,882 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Inception(nn.Module):
    b1: int
    b3: int
    b7: int
    bp: int

    @nn.compact
    def __call__(self, x):
        one = nn.relu(nn.Conv(self.b1, (1,))(x))
        three = nn.relu(nn.Conv(self.b3 // 2, (1,))(x))
        three = nn.relu(nn.Conv(self.b3, (3,))(three))
        seven = nn.relu(nn.Conv(self.b7 // 2, (1,))(x))
        seven = nn.relu(nn.Conv(self.b7, (7,))(seven))
        pool = nn.max_pool(x, (3,), strides=(1,), padding="SAME")
        pool = nn.relu(nn.Conv(self.bp, (1,))(pool))
        return jnp.concatenate([one, three, seven, pool], axis=-1)


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(24, (5,))(x[..., None]))
        x = Inception(b1=16, b3=24, b7=16, bp=8)(x)      # 64 channels
        x = nn.max_pool(x, (2,), strides=(2,))
        x = Inception(b1=24, b3=32, b7=24, bp=16)(x)     # 96 channels
        x = nn.max_pool(x, (4,), strides=(4,))           # length 5
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(x)
