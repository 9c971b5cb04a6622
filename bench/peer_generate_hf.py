"""The transformers side of bench/peer_generate.py, run with the peers' Python (torch and transformers are no
dependency of this project):

    /tmp/peers/bin/python bench/peer_generate_hf.py '<json settings>'

settings: hf (a folder convert.py to_hf wrote), cases (a list of {name, prompts: [[ids]], length, knobs: the
keyword arguments of generate}) and out (a JSON file to write). Each case is greedy (do_sample=False) and never
stops early (no end-of-text token), as the project's samples without --stop_at_endoftext. A case of several
prompts of different lengths runs them as one left-padded batch with an attention mask. Writes, per case, the new
tokens of each prompt and the smallest gap between the two largest logits at any step (how near argmax came to a
tie).
"""
import json
import sys

import torch


def main(settings):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(settings['hf'], attn_implementation='eager').eval()
    model.generation_config.eos_token_id = None  # the project's samples go on past <|endoftext|>
    pad = model.config.eos_token_id
    results = {'transformers': __import__('transformers').__version__, 'torch': torch.__version__, 'cases': {}}
    for case in settings['cases']:
        prompts = case['prompts']
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=case['length'],
                                 pad_token_id=pad, output_scores=True,
                                 return_dict_in_generate=True, **case['knobs'])
        gaps = [float((s.topk(2).values[:, 0] - s.topk(2).values[:, 1]).min()) for s in out.scores]
        results['cases'][case['name']] = {'tokens': out.sequences[:, width:].tolist(), 'min_gap': min(gaps)}
    with open(settings['out'], 'w') as f:
        json.dump(results, f)


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
