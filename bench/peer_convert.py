"""convert.py against Hugging Face transformers itself, beside the suite (torch and transformers are no dependency
of this project, so no test may need them):

    python bench/peer_convert.py [--peers_python /tmp/peers/bin/python]

A random-weight GPT-2 with the real GPT-2 vocabulary (tests/data/gpt2_vocab) goes out with `convert.py to_hf`;
transformers loads it (GPT2LMHeadModel.from_pretrained, AutoTokenizer.from_pretrained), and its token ids and
logits for a text are compared with this project's. The other way, transformers writes a random GPT2LMHeadModel
with save_pretrained, and `convert.py from_hf` brings it in; the logits are compared again. Prints one line per
check and exits 1 if any fails. Build the peers with
`python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch transformers safetensors numpy`.
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / 'src'), str(ROOT / 'tests')]

from gpt2.base import runtime  # noqa: E402

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import fire  # noqa: E402
import numpy as np  # noqa: E402

import convert  # noqa: E402
import encoder  # noqa: E402
import model  # noqa: E402
import support  # noqa: E402  (tests/)
from gpt2.base import checkpoint  # noqa: E402

HPARAMS = {'n_vocab': 50257, 'n_ctx': 64, 'n_embd': 32, 'n_head': 4, 'n_layer': 2}
TEXT = "Hello world, it's   2026!\n\tNaïve café — 日本語 and emoji 🤖 don't break\n"
TOLERANCE = 1e-4


def our_logits(folder, ids):
    with tf.Graph().as_default(), tf.Session() as sess:
        hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(folder))
        logits = model.model(hparams, np.array([ids]))['logits']
        tf.train.Saver().restore(sess, str(folder / checkpoint.current_checkpoint(folder)))
        return sess.run(logits)[0]


def report(name, ok, detail):
    print(f'{"ok  " if ok else "FAIL"} {name}: {detail}')
    return ok


def in_process(command, *args):
    try:
        command(*map(str, args))
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def main(peers_python='/tmp/peers/bin/python'):
    """Args:
      peers_python: the Python of a virtual environment with torch and transformers."""
    tf.disable_v2_behavior()
    tmp = Path(tempfile.mkdtemp(prefix='peer_convert.'))
    ours = tmp / 'ours'
    checkpoint.save_checkpoint(ours, HPARAMS, support.random_params(HPARAMS, seed=3))
    for name in ('encoder.json', 'vocab.bpe'):
        shutil.copyfile(ROOT / 'tests' / 'data' / 'gpt2_vocab' / name, ours / name)
    assert in_process(convert.to_hf, ours, tmp / 'hf') == 0
    ids = encoder.read_vocabulary(ours).encode(TEXT)

    settings = {'converted': str(tmp / 'hf'), 'made': str(tmp / 'made'), 'text': TEXT, 'out': str(tmp / 'peer.npz'),
                **{k: HPARAMS[k] for k in ('n_vocab', 'n_ctx', 'n_embd', 'n_head', 'n_layer')}}
    done = subprocess.run([peers_python, str(ROOT / 'bench' / 'peer_convert_hf.py'), json.dumps(settings)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f'the peer failed:\n{done.stderr[-3000:]}')
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    got = np.load(tmp / 'peer.npz')

    results = [
        report('to_hf: AutoTokenizer ids equal ours', got['ids'].tolist() == ids, f'{len(ids)} tokens'),
        report('to_hf: AutoTokenizer decodes the text back', peer['decoded_equal'], ''),
    ]
    diff = float(np.max(np.abs(got['converted_logits'] - our_logits(ours, ids))))
    results.append(report('to_hf: GPT2LMHeadModel logits equal ours', diff < TOLERANCE, f'max |diff| {diff:.2e}'))

    assert in_process(convert.from_hf, tmp / 'made' / 'safetensors', tmp / 'in') == 0
    diff = float(np.max(np.abs(got['made_logits'] - our_logits(tmp / 'in', ids))))
    results.append(report(f'from_hf: save_pretrained ({", ".join(peer["made_files"])}) logits equal transformers\'',
                          diff < TOLERANCE, f'max |diff| {diff:.2e}'))
    results.append(report('hf.read_tensors: pytorch_model.bin (with torch) equals model.safetensors',
                          peer['bin_equal'], f'{len(peer["bin_files"])} tensors'))
    code = in_process(convert.from_hf, tmp / 'made' / 'bin', tmp / 'in-bin')
    results.append(report('from_hf: pytorch_model.bin where torch is not installed is a clear error', code == 1,
                          f'exit {code}'))
    shutil.rmtree(tmp)
    sys.exit(0 if all(results) else 1)


if __name__ == '__main__':
    fire.Fire(main)
