"""The code language model, served in-process the T5X way on flax + orbax.

Modules (issue 4):
  model.py         Llama/Qwen2-family decoder (`Transformer`, `TransformerConfig`,
                   explicit `KVCache`), logical axis names on every parameter.
  partitioning.py  rule table onto a ('data', 'model') mesh, sharded creation
                   of parameters from `jax.eval_shape`, parameter counts.
  sampler.py       jitted, stateless sampling over a fixed-length KV cache:
                   left-padded prompt buckets, per-row temperature, top-k/top-p,
                   EOS, optional soft prompt as an input.
  testing.py       tiny public configs (and fast random weights) for tests.
  vocab.py         seqio-style vocabularies over `tokenizers`.
  checkpoints.py   orbax CheckpointManager with structure and shape checks;
                   exports, the default model, Hugging Face folders.
  prompt_tuning.py soft-prompt tuning with the model frozen (jitted step).
  serving.py       `LanguageModel`: generate / logits / tune on text.
  hf_import.py     Llama/Qwen2 Hugging Face folders (safetensors, sharded or
                   not, tokenizer.json) into our params, with strict checks;
                   `checkpoints.load_hf` serves one.
  sample.py        `python -m lm.sample`: print samples from a checkpoint.
  pretrain.py      `python -m lm.pretrain`: trains a tokenizer and a small
                   decoder on text files and exports it; the embedded
                   default model (`lm/default/`, `checkpoints.load_default()`)
                   was made with it (lm/README.md).
"""
