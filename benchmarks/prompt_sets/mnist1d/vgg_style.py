"""VGG-style CNN: three stages of two 3-tap ReLU convolutions (32, 64, 128
features) with max pooling after each, flatten (5 x 128), Dense(192), Dense(10).
220,778 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    stages: tuple = (32, 64, 128)
    hidden: int = 192

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        for features in self.stages:
            x = nn.Conv(features, kernel_size=(3,), padding='SAME')(x)
            x = nn.relu(x)
            x = nn.Conv(features, kernel_size=(3,), padding='SAME')(x)
            x = nn.relu(x)
            x = nn.max_pool(x, window_shape=(2,), strides=(2,))
        x = x.reshape((x.shape[0], -1))   # [batch, 640]
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)
