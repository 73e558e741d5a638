"""An MLP-Mixer on 1-D patches: the 40 inputs become 8 patches of 5, embedded to
56 channels; two mixer layers (token-mixing MLP over the 8 patches,
channel-mixing MLP over the 56 channels, each pre-LayerNorm and residual),
mean over patches, Dense(10). 27,722 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class MixerLayer(nn.Module):
    tokens_hidden: int = 24
    channels_hidden: int = 112

    @nn.compact
    def __call__(self, x):  # x: [batch, tokens, channels]
        y = nn.LayerNorm()(x)
        y = jnp.swapaxes(y, 1, 2)
        y = nn.Dense(self.tokens_hidden)(y)
        y = nn.gelu(y)
        y = nn.Dense(x.shape[1])(y)
        x = x + jnp.swapaxes(y, 1, 2)
        y = nn.LayerNorm()(x)
        y = nn.Dense(self.channels_hidden)(y)
        y = nn.gelu(y)
        y = nn.Dense(x.shape[2])(y)
        return x + y


class Model(nn.Module):
    patch: int = 5
    dim: int = 56
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        b = x.shape[0]
        x = x.reshape(b, 40 // self.patch, self.patch)
        x = nn.Dense(self.dim)(x)
        for _ in range(self.depth):
            x = MixerLayer()(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(10)(x.mean(axis=1))
