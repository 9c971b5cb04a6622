"""The transformers side of bench/peer_convert.py, run with the peers' Python (torch and transformers are no
dependency of this project):

    /tmp/peers/bin/python bench/peer_convert_hf.py '<json settings>'

settings: converted (a folder convert.py to_hf wrote), made (a folder to write a random GPT2LMHeadModel into with
save_pretrained, and a pytorch_model.bin of it), text, n_vocab, n_ctx, n_embd, n_head, n_layer, out
(an .npz to write). Writes the token ids of text and the logits of each model there, and checks
gpt2/interop/hf.py's reading of pytorch_model.bin (which needs torch) against the safetensors file.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def main(settings):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    converted = Path(settings['converted'])
    tokenizer = AutoTokenizer.from_pretrained(converted)
    ids = tokenizer(settings['text'])['input_ids']
    model = GPT2LMHeadModel.from_pretrained(converted, attn_implementation='eager').eval()
    with torch.no_grad():
        converted_logits = model(torch.tensor([ids])).logits[0].numpy()
    decoded = tokenizer.decode(ids)

    torch.manual_seed(1)
    config = GPT2Config(vocab_size=settings['n_vocab'], n_positions=settings['n_ctx'], n_embd=settings['n_embd'],
                        n_head=settings['n_head'], n_layer=settings['n_layer'], attn_implementation='eager')
    made = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # transformers initialises biases and layer norms to 0 and 1: make every weight count
        for p in made.parameters():
            p.add_(0.05 * torch.randn_like(p))
        made_logits = made(torch.tensor([ids])).logits[0].numpy()
    made_dir = Path(settings['made'])
    made.save_pretrained(made_dir / 'safetensors')
    # transformers 5 writes safetensors only; a PyTorch file as older versions wrote it, with the tied head:
    (made_dir / 'bin').mkdir()
    torch.save(made.state_dict(), made_dir / 'bin' / 'pytorch_model.bin')
    shutil.copyfile(made_dir / 'safetensors' / 'config.json', made_dir / 'bin' / 'config.json')
    for folder in ('safetensors', 'bin'):
        for name in ('vocab.json', 'merges.txt'):
            shutil.copyfile(converted / name, made_dir / folder / name)
    # The project's reader of PyTorch files, here where torch is (gpt2/interop/hf.py needs no TensorFlow).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'src'))
    from gpt2.interop import hf
    from_bin, from_safetensors = hf.read_tensors(made_dir / 'bin'), hf.read_tensors(made_dir / 'safetensors')
    bin_equal = all(np.array_equal(from_bin[n], v) for n, v in from_safetensors.items())
    hparams = hf.read_config(made_dir / 'bin')[0]
    converts = sorted(hf.from_hf_tensors(from_bin, hparams, 'bin')) == sorted(
        hf.from_hf_tensors(from_safetensors, hparams, 'safetensors'))
    np.savez(settings['out'], ids=np.array(ids), converted_logits=converted_logits, made_logits=made_logits)
    print(json.dumps({'decoded_equal': decoded == settings['text'],
                      'made_files': sorted(p.name for p in (made_dir / 'safetensors').iterdir()),
                      'bin_files': sorted(from_bin), 'bin_equal': bin_equal and converts}))


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
