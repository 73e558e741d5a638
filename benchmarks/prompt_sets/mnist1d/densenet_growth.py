"""A DenseNet-style 1-D CNN: each of five layers sees the concatenation of all
earlier feature maps and adds 12 new channels (growth rate 12, kernel 3,
GroupNorm before ReLU); a 1x1 transition to 32 channels, max pool 4, flatten,
Dense(10). 13,398 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    growth: int = 12
    num_layers: int = 5

    @nn.compact
    def __call__(self, x):
        features = [nn.Conv(16, (3,))(x[..., None])]
        for _ in range(self.num_layers):
            h = jnp.concatenate(features, axis=-1)
            h = nn.relu(nn.GroupNorm(num_groups=4)(h))
            features.append(nn.Conv(self.growth, (3,))(h))
        h = jnp.concatenate(features, axis=-1)      # 16 + 5 * 12 = 76 channels
        h = nn.relu(nn.Conv(32, (1,))(h))
        h = nn.max_pool(h, (4,), strides=(4,))
        return nn.Dense(10)(h.reshape(h.shape[0], -1))
