#!/usr/bin/env python3
"""Fine-tune GPT-2 on a text dataset; the run folder it writes is a model folder the sampling scripts load.

This script is its flags, their --help lines and train_main; the work is in gpt2/training/: the flags as one
TrainConfig (config.py) and their checks (checks.py), the run from start to end (trainer.py), where it starts
from (start.py), the training graph (graph.py, losses.py), the run folder (run_folder.py) and the loop (loop.py).
"""
import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from gpt2.training import checks  # noqa: E402
from gpt2.training import config  # noqa: E402
from gpt2.training import trainer  # noqa: E402

FLAGS = dict(
    dataset='the training text: a text file, a folder (all files in it, recursively), a glob, or a .npz of '
            'token arrays from encode.py. Required.',
    model_name='the base model to fine-tune, a folder in models_dir: 124M, 355M, 774M or 1558M.',
    models_dir=flags.COMMON_FLAGS['models_dir'],
    combine='gather text files into chunks of at least this many characters (training windows stay within a '
            'chunk).',
    encoding='the text files\' encoding.',
    batch_size='windows per step (per micro-batch with accumulate_gradients), on each device: the step\'s batch '
               'is this times the devices of all workers.',
    learning_rate='the optimizer\'s learning rate, above 0; by default 2e-5 for adam and sgd, 1e-3 for adafactor.',
    optimizer='adam, sgd, or adafactor (second moments factored per matrix, no first moment: the optimizer state '
              'is about 0.1% of the weights instead of Adam\'s 200%).',
    adafactor_beta1='with adafactor, keep a first moment with this decay (e.g. 0.9; more memory); by default none.',
    adafactor_relative_step='with adafactor, its own rate min(1e-2, 1/sqrt(step)) instead of --learning_rate.',
    adafactor_scale_parameter='with adafactor, scale each update by the RMS of its weight.',
    lr_schedule='constant, linear (down to 0 at total_steps) or cosine (half a cosine to 0 at total_steps), '
                'after warmup_steps of linear warmup from 0.',
    warmup_steps='updates of linear warmup from 0 to the learning rate.',
    total_steps='with linear or cosine: the update count at which the rate reaches 0 (counted over the whole run, '
                'resumes included).',
    accumulate_gradients='make each step from this many batches (the same update as one batch this many times '
                         'the size, in the memory of one).',
    memory_saving_gradients='recompute activations in the backward pass instead of keeping them: less memory, '
                            'slower steps.',
    mixed_precision='bfloat16 or float16: the products and activations in that half precision, the weights, the '
                    'optimizer state and the checkpoints float32 (float16 with loss scaling: a GPU only; bfloat16: '
                    'a GPU, or a CPU with AVX512_BF16 or AMX). By default float32 throughout.',
    only_train_transformer_layers='keep the embeddings (wte, wpe) and the final layer norm as they are.',
    noise='replace each input token with a random one with this probability, 0 to below 1 (a regulariser).',
    seq_len="tokens per window, 2 to the model's window (n_ctx, the default).",
    steps='train this many steps, then save and stop; 0 (the default) trains until Ctrl-C.',
    seed='a whole number that makes the run repeatable; by default a random one. A resumed run keeps its seed.',
    run_name='the run\'s name: its folder in checkpoint_dir and in sample_dir.',
    checkpoint_dir='the folder of run folders; a relative path is in the working directory. A run folder is a '
                   'model folder: sample from it with --models_dir CHECKPOINT_DIR --model_name RUN_NAME.',
    restore_from='latest (the run\'s latest checkpoint, else the base model), fresh (the base model), or the '
                 'path of a checkpoint (e.g. checkpoint/run1/model-1000) or model folder.',
    overwrite='with --restore_from fresh, discard the run\'s checkpoints instead of refusing.',
    save_every='save a checkpoint every this many steps (and always at the end and on Ctrl-C).',
    max_checkpoints='keep this many latest checkpoints in the run folder; older ones are removed.',
    sample_every='print and write samples every this many steps and at the end of --steps; 0 for none.',
    sample_length="tokens per sample, 1 to the model's window less one (the default).",
    sample_num='samples each time.',
    sample_dir='samples go to SAMPLE_DIR/RUN_NAME/samples-STEP; a relative path is in the working directory.',
    top_k='samples draw only from the k most likely tokens; 0 means no limit.',
    top_p='samples draw only from the most likely tokens whose probabilities add up to at most top_p, in (0, 1]; '
          '1 (the default) means no limit.',
    val_dataset='validation text, in any form dataset takes (give the dataset itself to validate on the training '
                'text); needs val_every.',
    val_every='print the validation loss and perplexity every this many steps (and at the start); 0 for never.',
    val_batch_size='windows per validation batch.',
    val_batch_count='validation batches; the windows are chosen once, so the loss is comparable over the run.',
    keep_best='keep the checkpoint of the lowest validation loss (saved when it is reached) whatever '
              'max_checkpoints says; sample from it with --checkpoint best. Needs val_every.',
    early_stopping='stop after this many validations in a row without a new lowest loss; 0 for never. Needs '
                   'val_every.',
    devices='train on this many local devices at once, data-parallel (the GPUs, or with none CPU devices), or on '
            'a list of them such as /gpu:0,/gpu:2; 1 (the default) trains on one. With TF_CONFIG set, each '
            'worker uses its machine\'s GPUs (or its CPU) instead; see docs/distributed.md.',
    collective_timeout='with TF_CONFIG: seconds a step may wait for the other workers (a lost worker) before '
                       'this one exits with an error; longer than the chief\'s longest sampling, validation or '
                       'save.',
)


@flags.script('Fine-tune GPT-2 on a dataset. The run folder CHECKPOINT_DIR/RUN_NAME is a model folder that the '
            'sampling scripts load.', **FLAGS)
def train_main(dataset=None, model_name='124M', models_dir='models', combine=50000, encoding='utf-8', batch_size=1,
               learning_rate=None, optimizer='adam', adafactor_beta1=None, adafactor_relative_step=False,
               adafactor_scale_parameter=False, lr_schedule='constant', warmup_steps=0, total_steps=None,
               accumulate_gradients=1, memory_saving_gradients=False, mixed_precision=None,
               only_train_transformer_layers=False, noise=0.0, seq_len=None, steps=0, seed=None, run_name='run1',
               checkpoint_dir='checkpoint', restore_from='latest', overwrite=False, save_every=1000,
               max_checkpoints=5, sample_every=100, sample_length=None, sample_num=1, sample_dir='samples', top_k=40,
               top_p=1.0, val_dataset=None, val_every=0, val_batch_size=2, val_batch_count=40, keep_best=False,
               early_stopping=0, devices=1, collective_timeout=300):
    """Check every flag that does not depend on the model, then train (gpt2/training/trainer.py)."""
    settings = config.TrainConfig(**locals())
    checks.check_flags(settings)
    trainer.train(settings)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(train_main, command=flags.check_argv(train_main))
