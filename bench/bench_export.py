"""The SavedModel of src/export.py beside the Session's sampling loop, on a random-weight model:

    python bench/bench_export.py [--n_layer 12 --n_embd 768 --n_head 12] [--length 128] [--rounds 3]

Exports the model of bench_sample.py's cache (written there once) with --max_length 1024, then, in fresh
processes taking turns, times greedy decoding of --length tokens after a one-token prompt at batch 1: the
SavedModel called through tf.saved_model.load(...).signatures['serving_default'] (TensorFlow 2, eager), and
sample.sample_sequence in a tf.compat.v1 Session as the scripts run it (frozen weights, the CPU's split products).
Each process first makes one short call, so the times are of decoding, not of loading. Prints tokens/s per round.
"""
import json
import subprocess
import sys
from pathlib import Path

import fire

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / 'src'), str(BENCH)]

SERVED = '''
import json, sys, time
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']
def run(length):
    start = time.perf_counter()
    serve(prompt=tf.constant([[0]]), length=tf.constant(length), temperature=tf.constant(0.0),
          top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))['tokens'].numpy()
    return time.perf_counter() - start
run(4)
print(json.dumps(run(int(sys.argv[2]))))
'''

# argv: the model folder, the length, the src/ folder to run, bench/ (for revisions.py: either layout of src/).
SESSION = '''
import json, sys, time
sys.path.insert(0, sys.argv[4])
import revisions
src = sys.argv[3]
revisions.use(src)
tf = revisions.import_tensorflow(src)
checkpoint, loading = revisions.load(src, 'gpt2.base.checkpoint'), revisions.load(src, 'gpt2.loading')
import model, sample
tf.disable_v2_behavior()
folder = __import__('pathlib').Path(sys.argv[1])
hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(folder))
with tf.Session(config=sample.session_config()) as sess:
    wait = loading.start_restore(sess, folder, hparams)
    outs = {n: sample.sample_sequence(hparams=hparams, length=n, start_token=0, batch_size=1, temperature=0,
                                      frozen_weights=True) for n in (4, int(sys.argv[2]))}
    wait()
    sess.run(outs[4])
    start = time.perf_counter()
    sess.run(outs[int(sys.argv[2])])
    print(json.dumps(time.perf_counter() - start))
'''


def main(n_layer=12, n_embd=768, n_head=12, length=128, rounds=3):
    """Args:
      n_layer: the model's layers (12 for the 124M shape).
      n_embd: its width.
      n_head: its heads.
      length: tokens to decode per measurement.
      rounds: measurements of each, taking turns."""
    import bench_sample
    name, model_dir = bench_sample.ensure_model(n_layer, n_embd, n_head)
    exported = BENCH / '.cache' / 'export' / name
    if not exported.exists():
        subprocess.run([sys.executable, str(ROOT / 'src' / 'export.py'), str(model_dir), str(exported)], check=True)
    for r in range(rounds):
        times = {}
        for what, code, args in (('SavedModel', SERVED, [str(exported), str(length)]),
                                 ('Session', SESSION, [str(model_dir), str(length), str(ROOT / 'src'), str(BENCH)])):
            done = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, check=True)
            times[what] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f'round {r + 1}: ' + ', '.join(f'{k} {length / t:.1f} tokens/s' for k, t in times.items()),
              flush=True)


if __name__ == '__main__':
    fire.Fire(main)
