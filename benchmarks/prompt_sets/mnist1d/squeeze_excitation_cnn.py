"""A CNN with squeeze-and-excitation: three Conv(96, 5) + ReLU stages, each
rescaling its channels by sigmoid(Dense(96)(relu(Dense(24)(mean over
length)))), max pool between stages, flatten, Dense(10).
116,722 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class SqueezeExcite(nn.Module):
    reduction: int = 4

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        s = jnp.mean(x, axis=1)                      # squeeze: [batch, c]
        s = nn.relu(nn.Dense(c // self.reduction)(s))
        s = nn.sigmoid(nn.Dense(c)(s))               # excite: channel weights
        return x * s[:, None, :]


class Model(nn.Module):
    channels: int = 96

    @nn.compact
    def __call__(self, x):
        x = x[:, :, None]
        for stage in range(3):
            x = nn.relu(nn.Conv(self.channels, (5,))(x))
            x = SqueezeExcite()(x)
            if stage < 2:
                x = nn.max_pool(x, (2,), strides=(2,))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(x)
