"""What the machine has: memory for a new allocation (a container's cgroup limit included), the GPUs' memory,
bfloat16 instructions, and room on a disk. Read here once for sampling (gpt2/sampling/cpu_matmul.py) and
training (train.py's start-up report and --mixed_precision's check, the run folder's check before a save), so
that both see the same limit."""
import os
import shutil
import subprocess
from pathlib import Path

from gpt2.base import checkpoint

GB = 1e9
MEMINFO = '/proc/meminfo'
CPUINFO = '/proc/cpuinfo'
# The x86 instruction-set flags (as Linux names them) of bfloat16 products in hardware: AVX-512's dot products
# (AMD Zen 4, Intel Cooper Lake and later) or AMX's tiles (Intel Sapphire Rapids and later).
BFLOAT16_FLAGS = ('avx512_bf16', 'amx_bf16')
# cgroup v2, as a container sees its own group: the limit ('max' for none) and what the group already uses.
CGROUP = '/sys/fs/cgroup'


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------

def available_memory(meminfo=None, cgroup=None):
    """Bytes this process may still allocate: the kernel's MemAvailable (else, where the kernel does not say, all
    of the machine's memory), or less under a cgroup (v2) limit, which a container's processes are killed at
    although the machine has more; None if nothing can be read. meminfo, cgroup: where to read them, by default
    MEMINFO and CGROUP."""
    found = [n for n in (mem_available(meminfo or MEMINFO), cgroup_room(cgroup or CGROUP)) if n is not None]
    return min(found) if found else None


def mem_available(meminfo=MEMINFO):
    """The kernel's MemAvailable in bytes, else the machine's physical memory, else None."""
    try:
        with open(meminfo, encoding='ascii') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError):
        return None


def cgroup_room(cgroup=CGROUP):
    """Bytes left below this process's cgroup (v2) memory limit, or None where there is no limit."""
    try:
        limit = (Path(cgroup) / 'memory.max').read_text(encoding='ascii').strip()
        if limit == 'max':
            return None
        return int(limit) - int((Path(cgroup) / 'memory.current').read_text(encoding='ascii'))
    except (OSError, ValueError):
        return None


def gpu_memory(run=subprocess.run):
    """Bytes of memory of the smallest GPU the driver reports (nvidia-smi), or None where there is no NVIDIA
    driver. Asked of the driver, not of TensorFlow, whose asking would set up the GPUs before the session."""
    try:
        done = run(['nvidia-smi', '--query-gpu=memory.total', '--format=csv,noheader,nounits'],
                   capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(line) for line in done.stdout.split() if line.strip().isdigit()] if done.returncode == 0 else []
    return min(sizes) * 2**20 if sizes else None


# ---------------------------------------------------------------------------------------------------------------
# Instruction set
# ---------------------------------------------------------------------------------------------------------------

def cpu_has_bfloat16(cpuinfo=CPUINFO):
    """Whether the CPU multiplies bfloat16 in hardware (one of BFLOAT16_FLAGS among /proc/cpuinfo's flags): where
    it does not, TensorFlow emulates bfloat16 products, slower than float32's. False where nothing can be read."""
    try:
        with open(cpuinfo, encoding='ascii', errors='replace') as f:
            for line in f:
                if line.startswith('flags'):
                    return any(flag in line.split() for flag in BFLOAT16_FLAGS)
    except OSError:
        pass
    return False


# ---------------------------------------------------------------------------------------------------------------
# Disk
# ---------------------------------------------------------------------------------------------------------------

class DiskSpaceError(checkpoint.ModelError):
    """The disk cannot hold the next checkpoint."""


# Room left besides the checkpoint itself: its index and the state file.
DISK_MARGIN = 16 << 20


def free_space(path):
    """Bytes free on the disk of path (the nearest folder that exists)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def check_disk(path, needed, free=free_space):
    """Raise DiskSpaceError, before anything is written, if the disk of path cannot hold needed bytes more."""
    have = free(path)
    if have < needed + DISK_MARGIN:
        raise DiskSpaceError(f'not enough disk space to save a checkpoint in {path}: it needs '
                             f'{needed / GB:.2f} GB and {have / GB:.2f} GB is free; the checkpoints already there '
                             f'are intact; free some space, or lower --max_checkpoints, and resume with '
                             f'--restore_from latest')
