r"""The Hugging Face transformers side of the LM benchmarks.

Not part of the project: benchmarks/lm_decode.py and benchmarks/prompt_tuning.py
run this file in a subprocess under an interpreter that has torch and
transformers (neither is a dependency of the project). Two commands, each
printing one JSON object as its last line:

  python benchmarks/hf_reference.py make --out=DIR [--hidden=256] [--layers=6]
      [--heads=8] [--kv_heads=4] [--mlp=704] [--vocab=4096] [--max_len=2048]
      [--seed=0]

writes a randomly initialised `LlamaForCausalLM` (transformers' own
initialiser, float32, untied embeddings) as a Hugging Face folder:
`config.json`, `model.safetensors` and `tokenizer.json` (the small byte-level
BPE of tests/fixtures/hf/make_fixtures.py: ids 0, 1, 2 are `<pad>`, `<eos>`,
`<bos>`; the embedding has more rows than the tokenizer has tokens, which
`lm.checkpoints.load_hf` accepts). Prints `params` and `folder`.

  python benchmarks/hf_reference.py generate --checkpoint=DIR --prompts=P.npy
      --batch_sizes=1,16 [--new_tokens=256] [--repeats=1] [--threads=2]
      [--seed=0]

times `model.generate` (sampling at temperature 1 with no top-k / top-p
filter, the default dynamic KV cache, SDPA attention) on the first B rows of
the int32 prompts `P.npy [rows, prompt_length]` for each batch size B, every
row generating exactly `new_tokens` tokens (`min_new_tokens` suppresses EOS).
One untimed warm-up generation per batch size precedes the timed ones.
Prints `tokens_per_s` and `cpu_s` (process CPU time of each generation; batch
size -> one value per repeat), `threads`,
`torch` and `transformers` versions.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import transformers

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'tests', 'fixtures', 'hf')
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2  # make_fixtures.SPECIAL_TOKENS.
WARMUP_TOKENS = 8


def make(args):
    sys.path.insert(0, FIXTURES)
    import make_fixtures  # pylint: disable=g-import-not-at-top
    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden,
        intermediate_size=args.mlp, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_len, tie_word_embeddings=False,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(args.seed)
    model = transformers.LlamaForCausalLM(config).float().eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    make_fixtures.train_tokenizer().save(os.path.join(args.out, 'tokenizer.json'))
    return {'params': sum(p.numel() for p in model.parameters()),
            'folder': args.out}


def generate(args):
    torch.set_num_threads(args.threads)
    model = transformers.LlamaForCausalLM.from_pretrained(
        args.checkpoint, dtype=torch.float32).eval()
    prompts = torch.from_numpy(np.load(args.prompts).astype(np.int64))
    results, cpu_seconds = {}, {}
    for batch in (int(b) for b in args.batch_sizes.split(',')):
        if batch > prompts.shape[0]:
            raise ValueError(f'batch {batch} but only {prompts.shape[0]} prompts')
        input_ids = prompts[:batch]
        options = dict(attention_mask=torch.ones_like(input_ids), do_sample=True,
                       temperature=1.0, top_k=0, top_p=1.0,
                       pad_token_id=PAD_ID, eos_token_id=EOS_ID)
        runs, cpu = [], []
        with torch.inference_mode():
            model.generate(input_ids, max_new_tokens=WARMUP_TOKENS,
                           min_new_tokens=WARMUP_TOKENS, **options)
            for rep in range(args.repeats):
                torch.manual_seed(args.seed + rep)
                start, start_cpu = time.perf_counter(), time.process_time()
                out = model.generate(input_ids, max_new_tokens=args.new_tokens,
                                     min_new_tokens=args.new_tokens, **options)
                seconds = time.perf_counter() - start
                cpu.append(time.process_time() - start_cpu)
                generated = out.shape[1] - input_ids.shape[1]
                if generated != args.new_tokens:
                    raise RuntimeError(f'generated {generated} tokens, expected '
                                       f'{args.new_tokens}')
                runs.append(batch * generated / seconds)
        results[str(batch)] = runs
        cpu_seconds[str(batch)] = cpu
    return {'tokens_per_s': results, 'cpu_s': cpu_seconds, 'threads': torch.get_num_threads(),
            'torch': torch.__version__, 'transformers': transformers.__version__}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    p = commands.add_parser('make', help='write a random Llama HF folder')
    p.add_argument('--out', required=True)
    for name, default in (('hidden', 256), ('layers', 6), ('heads', 8),
                          ('kv_heads', 4), ('mlp', 704), ('vocab', 4096),
                          ('max_len', 2048), ('seed', 0)):
        p.add_argument(f'--{name}', type=int, default=default)
    g = commands.add_parser('generate', help='time model.generate')
    g.add_argument('--checkpoint', required=True)
    g.add_argument('--prompts', required=True, help='.npy int [rows, length]')
    g.add_argument('--batch_sizes', default='1,16')
    g.add_argument('--new_tokens', type=int, default=256)
    g.add_argument('--repeats', type=int, default=1)
    g.add_argument('--threads', type=int, default=2)
    g.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    result = make(args) if args.command == 'make' else generate(args)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
    main()
