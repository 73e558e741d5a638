"""A CNN defined in setup(): a list of four Conv layers (kernel 5; 20, 20, 40,
40 features) applied in a loop with Swish (SiLU), max pooling after the 2nd
and 4th, flatten, Dense(10). 18,230 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    def setup(self):
        self.convs = [nn.Conv(features=f, kernel_size=(5,), padding="SAME")
                      for f in (20, 20, 40, 40)]
        self.classifier = nn.Dense(features=10)

    def __call__(self, x):
        h = x[:, :, None]
        for i, conv in enumerate(self.convs):
            h = nn.swish(conv(h))
            if i % 2 == 1:
                h = nn.max_pool(h, window_shape=(2,), strides=(2,))
        h = h.reshape((h.shape[0], -1))
        return self.classifier(h)
