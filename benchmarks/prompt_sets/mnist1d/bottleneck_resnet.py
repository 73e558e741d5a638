"""A wider bottleneck ResNet: stem Conv(256, 7), four bottleneck blocks
(1x1 to 96, 3-tap conv, 1x1 back to 256, LayerNorm over channels, residual,
ReLU), average pooling after blocks 2 and 4, flatten (10 x 256), Dense(10).
338,698 parameters.
"""
import flax.linen as nn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3-tap conv -> 1x1 expand, plus the identity."""
    width: int = 256
    inner: int = 96

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Conv(self.inner, (1,))(x))
        y = nn.relu(nn.Conv(self.inner, (3,))(y))
        y = nn.Conv(self.width, (1,))(y)
        y = nn.LayerNorm()(y)
        return nn.relu(x + y)


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(256, (7,))(x[..., None]))
        for i in range(4):
            x = Bottleneck()(x)
            if i % 2 == 1:
                x = nn.avg_pool(x, (2,), strides=(2,))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(x)
