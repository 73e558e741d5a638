"""evoprompting-jax: EvoPrompting (Chen, Dohan & So, 2023) in JAX."""

import setuptools

setuptools.setup(
    name='evoprompting-jax',
    version='0.1.0',
    description=('EvoPrompting: evolutionary neural architecture search with '
                 'a code language model, in JAX.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(
        include=['evoprompting', 'evoprompting.*', 'lm', 'lm.*',
                 'clrs_tasks', 'clrs_tasks.*', 'seeds', 'seeds.*',
                 'launch', 'launch.*']),
    # Seed programs are data read with importlib.resources.
    # The embedded default LM (lm/README.md) ships inside the package.
    package_data={'seeds': ['*/*.py', '*/*/*.py'], 'lm': ['default/*']},
    include_package_data=True,
    install_requires=[
        # Plain CPU JAX from the package index; no TensorFlow, no torch.
        'jax>=0.6',
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'gin-config>=0.5',
        'absl-py>=2.0',
        'numpy>=1.26',
        'mnist1d>=0.0.2',
        'tokenizers>=0.20',
        'safetensors>=0.4',  # Hugging Face checkpoints (lm/hf_import.py).
        'tensorboardX>=2.6',  # TensorBoard summaries without TensorFlow.
        'matplotlib>=3.8',  # Report and TensorBoard figures (Agg backend).
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-timeout>=2.3'],
        # CLRS-30: jraph and the light dependencies of dm-clrs' samplers.
        # dm-clrs itself requires TensorFlow in its metadata, so it is
        # installed in a second step, without dependencies:
        #   pip install --no-deps dm-clrs==2.0.3
        # (see clrs_tasks/_clrs_import.py).
        'clrs': ['jraph>=0.0.6.dev0', 'chex>=0.1.86', 'attrs>=24.2'],
        # JAX for an accelerator, on top of the CPU default (README, "Scale").
        'gpu': ['jax[cuda12]>=0.6'],
        'tpu': ['jax[tpu]>=0.6'],
    },
)
