"""A small ResNet with GroupNorm: stem Conv(96, 5), three residual blocks of
two Conv(96, 3) with GroupNorm(8 groups) and ReLU, max pooling between
blocks, global average, Dense(10). 168,586 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Block(nn.Module):
    features: int
    groups: int = 8

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.Conv(self.features, (3,), use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(num_groups=self.groups)(y))
        y = nn.Conv(self.features, (3,), use_bias=False)(y)
        y = nn.GroupNorm(num_groups=self.groups)(y)
        return nn.relu(y + residual)


class Model(nn.Module):
    width: int = 96
    num_blocks: int = 3
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (5,))(x[..., None])
        for i in range(self.num_blocks):
            x = Block(self.width)(x)
            if i < self.num_blocks - 1:
                x = nn.max_pool(x, (2,), strides=(2,))
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes)(x)
