"""gpt2.base.system: the memory a process may still allocate (a container's cgroup limit included), read from faked
/proc/meminfo and cgroup files; the GPUs' memory from a faked driver; the disk check; and both users of the memory
figure, train.py's start-up warning and CPU sampling's packed copy, seeing the same limit."""
import inspect
import os
from types import SimpleNamespace

import pytest

import train
from gpt2.base import system
from gpt2.sampling import cpu_matmul
from gpt2.training import config
from gpt2.training import run_folder
from gpt2.training import trainer

GB = 10**9
GPT2_124M = SimpleNamespace(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)


def fake_machine(tmp_path, *, mem_available_kb, limit=None, current=0):
    """A /proc/meminfo and a cgroup v2 folder in tmp_path -> (meminfo path, cgroup folder). limit None: no limit
    ('max'); 'absent': no cgroup files at all."""
    meminfo = tmp_path / 'meminfo'
    meminfo.write_text(f'MemTotal:       99999999 kB\nMemFree:         1000000 kB\n'
                       f'MemAvailable:   {mem_available_kb:>8} kB\nBuffers:          100000 kB\n')
    cgroup = tmp_path / 'cgroup'
    cgroup.mkdir()
    if limit != 'absent':
        (cgroup / 'memory.max').write_text('max\n' if limit is None else f'{limit}\n')
        (cgroup / 'memory.current').write_text(f'{current}\n')
    return meminfo, cgroup


def test_a_cgroup_limit_below_mem_available_is_what_is_available(tmp_path):
    # 64 GB available on the machine; the container may use 2 GB and already uses 0.5 GB: 1.5 GB left.
    meminfo, cgroup = fake_machine(tmp_path, mem_available_kb=64_000_000, limit=2 * GB, current=GB // 2)
    assert system.available_memory(meminfo, cgroup) == 1_500_000_000


@pytest.mark.parametrize('limit', [None, 'absent', 100 * GB])
def test_without_a_lower_cgroup_limit_mem_available_is_what_is_available(tmp_path, limit):
    meminfo, cgroup = fake_machine(tmp_path, mem_available_kb=3_000_000, limit=limit)
    assert system.available_memory(meminfo, cgroup) == 3_000_000 * 1024


def test_without_mem_available_the_machines_memory_is_the_figure(tmp_path):
    (tmp_path / 'meminfo').write_text('MemTotal:       99999999 kB\n')  # a kernel older than MemAvailable
    physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    assert system.available_memory(tmp_path / 'meminfo', tmp_path / 'no-cgroup') == physical


def test_available_memory_of_this_machine_is_positive_and_at_most_the_machine():
    available = system.available_memory()
    assert 0 < available <= os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def test_gpu_memory_is_the_smallest_gpu_the_driver_reports_or_none():
    def driver(stdout, returncode=0):
        return lambda args, **kw: SimpleNamespace(stdout=stdout, returncode=returncode)

    assert system.gpu_memory(driver('16384\n40960\n')) == 16384 * 2**20
    assert system.gpu_memory(driver('', 9)) is None
    assert system.gpu_memory(driver('No devices were found\n')) is None

    def no_driver(args, **kw):
        raise FileNotFoundError(args[0])
    assert system.gpu_memory(no_driver) is None


def test_the_disk_check_wants_the_checkpoint_and_a_margin(tmp_path):
    system.check_disk(tmp_path, 1000, lambda path: 1000 + system.DISK_MARGIN)
    with pytest.raises(system.DiskSpaceError, match=r'not enough disk space .* --max_checkpoints'):
        system.check_disk(tmp_path, 1000, lambda path: 999 + system.DISK_MARGIN)


# ---------------------------------------------------------------------------------------------------------------
# Its users see the container's limit
# ---------------------------------------------------------------------------------------------------------------

def on_fake_machine(monkeypatch, tmp_path, **machine):
    meminfo, cgroup = fake_machine(tmp_path, **machine)
    monkeypatch.setattr(system, 'MEMINFO', str(meminfo))
    monkeypatch.setattr(system, 'CGROUP', str(cgroup))
    monkeypatch.setattr(system, 'gpu_memory', lambda: None)  # the machine's memory is compared, GPU or not


def report_124m(tmp_path, capsys):
    """train.py's start-up report of a 124M run with Adam at 1 x 1024 tokens (about 2.6 GB) -> its stderr."""
    defaults = {name: p.default for name, p in inspect.signature(train.train_main).parameters.items()}
    settings = config.TrainConfig(**defaults).resolved(seq_len=1024, sample_length=1023, seed=1)
    run = run_folder.RunFolder(tmp_path / 'run', free_space=lambda path: 10**15)
    trainer.report_memory(GPT2_124M, run, settings)
    return capsys.readouterr().err


def test_the_training_memory_warning_uses_the_cgroup_limit(monkeypatch, tmp_path, capsys):
    on_fake_machine(monkeypatch, tmp_path, mem_available_kb=64_000_000, limit=2 * GB, current=GB // 2)
    err = report_124m(tmp_path, capsys)
    assert err.startswith('warning: this run needs about ') and 'this machine has 1.5 GB available' in err
    assert err.count('\n') == 1


def test_no_training_memory_warning_without_the_limit(monkeypatch, tmp_path, capsys):
    on_fake_machine(monkeypatch, tmp_path, mem_available_kb=64_000_000, limit=None)
    assert report_124m(tmp_path, capsys) == ''


def test_cpu_sampling_sees_the_same_limit(monkeypatch, tmp_path, capsys):
    on_fake_machine(monkeypatch, tmp_path, mem_available_kb=64_000_000, limit=2 * GB, current=GB // 2)
    assert not cpu_matmul.room_for_packed_copy(GB)  # 2.2 GB needed
    assert '1.5 GB available' in capsys.readouterr().err


@pytest.mark.parametrize('flag_line, has', [('flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni', True),
                                            ('flags\t\t: fpu sse2 amx_bf16 amx_tile', True),
                                            ('flags\t\t: fpu sse2 avx512f avx512_vnni', False)])
def test_bfloat16_instructions_are_read_from_the_cpu_flags(tmp_path, flag_line, has):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Some CPU\n{flag_line}\n\nprocessor\t: 1\n{flag_line}\n')
    assert system.cpu_has_bfloat16(cpuinfo) is has
    assert system.cpu_has_bfloat16(tmp_path / 'absent') is False
