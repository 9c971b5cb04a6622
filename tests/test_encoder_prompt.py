"""The interactive script reads a literal <|endoftext|> in a prompt as the end-of-text token."""
import reference
from test_scripts import INTERACTIVE, decode, run, tiny_flags


def test_endoftext_in_a_prompt_is_one_token(tiny_model):
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=6, top_k=1), stdin=b' the<|endoftext|> and\n')
    assert done.returncode == 0, done.err
    prompt = [258, tiny_model.endoftext, 262]  # ' the', <|endoftext|>, ' and' (tests/conftest.py's merges)
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 6)[len(prompt):]
    assert f'SAMPLE 1 {"=" * 40}\n{decode(tiny_model, tokens)}\n' in done.out
