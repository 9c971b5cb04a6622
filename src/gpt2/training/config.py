"""A training run's settings: train.py's flags as one value (as nanoGPT's config and transformers'
TrainingArguments are), handed to the pieces of the run instead of forty keywords each.

train.train_main's signature holds the defaults and train.FLAGS the --help lines (fire builds --help from them);
TrainConfig holds what the pieces read, the fields in the same order. It is built from train_main's keywords as
the user gave them, checked (gpt2/training/checks.py), and then completed with what depends on the model and the
start (resolved): the window, the sample length, the learning rate and the seed.
"""
import dataclasses

# --learning_rate's default for each optimizer: Adafactor's is transformers' fine-tuning setting.
DEFAULT_LEARNING_RATE = {'adam': 2e-5, 'sgd': 2e-5, 'adafactor': 1e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """train.py's flags (see train.FLAGS for each one's meaning and range)."""
    # The data and the base model
    dataset: str  # a text file, a folder, a glob or a .npz
    model_name: str  # the base model, a folder in models_dir
    models_dir: str
    combine: int  # characters per chunk of gathered text files
    encoding: str  # the text files' encoding
    # The step
    batch_size: int  # rows per (micro-)batch on each device
    learning_rate: float | None  # None: DEFAULT_LEARNING_RATE of the optimizer (or Adafactor's relative step)
    optimizer: str  # one of graph.OPTIMIZERS
    adafactor_beta1: float | None
    adafactor_relative_step: bool
    adafactor_scale_parameter: bool
    lr_schedule: str  # gpt2/training/schedules.py
    warmup_steps: int
    total_steps: int | None
    accumulate_gradients: int  # micro-batches per update
    memory_saving_gradients: bool  # recompute the blocks' activations in the backward pass
    mixed_precision: str | None  # None (float32), or the compute dtype of precision.PRECISIONS
    only_train_transformer_layers: bool
    noise: float  # probability of replacing an input token
    seq_len: int | None  # tokens per window; None: the model's n_ctx
    # The run
    steps: int  # 0: until Ctrl-C
    seed: int | None  # None: the resumed run's, else a random one
    run_name: str
    checkpoint_dir: str  # a relative path is in the working directory
    restore_from: str  # latest, fresh, or a checkpoint's path
    overwrite: bool
    save_every: int
    max_checkpoints: int
    # Samples while training
    sample_every: int  # 0: none
    sample_length: int | None  # None: the window less one
    sample_num: int
    sample_dir: str  # a relative path is in the working directory
    top_k: int
    top_p: float
    # Validation
    val_dataset: str | None
    val_every: int  # 0: never
    val_batch_size: int
    val_batch_count: int
    keep_best: bool
    early_stopping: int  # validations without improvement before stopping; 0: never
    # Devices
    devices: object  # a count, or a list of device names
    collective_timeout: float  # seconds, with TF_CONFIG

    def adafactor_options(self):
        """AdafactorOptimizer's keywords from the flags, or None for another optimizer."""
        if self.optimizer != 'adafactor':
            return None
        return dict(beta1=self.adafactor_beta1, relative_step=self.adafactor_relative_step,
                    scale_parameter=self.adafactor_scale_parameter)

    def rate(self):
        """The learning rate to build with: --learning_rate, else the optimizer's default; None with Adafactor's
        relative step, which sets its own."""
        if self.learning_rate is not None:
            return self.learning_rate
        return None if self.adafactor_relative_step else DEFAULT_LEARNING_RATE[self.optimizer]

    def resolved(self, *, seq_len, sample_length, seed):
        """The same settings with those that depend on the model and the start filled in."""
        return dataclasses.replace(self, seq_len=seq_len, sample_length=sample_length, seed=seed,
                                   learning_rate=self.rate())
