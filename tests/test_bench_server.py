"""bench/bench_server.py's own arithmetic and options, without a server: its percentiles and the summary of a
closed loop against figures worked out by hand, --quick, and bad options refused with one error line before
anything runs."""
import inspect
import subprocess
import sys

import pytest

import support
from gpt2.base import flags

sys.path.insert(0, str(support.REPO / 'bench'))
import bench_server  # noqa: E402


def given(**changes):
    """main's arguments as fire hands them over: its defaults, with changes."""
    values = {name: p.default for name, p in inspect.signature(bench_server.main).parameters.items()}
    return dict(values, **changes)


def test_percentile_interpolates_between_the_nearest_ranks():
    assert bench_server.percentile([3.0, 1.0, 4.0, 2.0], 50) == 2.5  # rank 1.5 of 1, 2, 3, 4: halfway from 2 to 3
    assert bench_server.percentile(list(range(1, 11)), 99) == pytest.approx(9.91)  # rank 8.91: 9 + 0.91 x (10 - 9)
    assert bench_server.percentile([5.0, 1.0], 0) == 1.0
    assert bench_server.percentile([5.0, 1.0], 100) == 5.0
    assert bench_server.percentile([7.0], 99) == 7.0


def test_summary_counts_the_tokens_answered_not_the_tokens_asked():
    answers = [(1.0, 64), (3.0, 60), (2.0, 64), (4.0, 12)]  # (latency s, usage.completion_tokens)
    summary = bench_server.summarize(answers, seconds=5.0)
    assert summary['requests'] == 4 and summary['completion_tokens'] == 200
    assert summary['tokens_per_s'] == 40.0 and summary['requests_per_s'] == 0.8
    assert summary['tokens_per_request'] == 50.0
    assert summary['p50_s'] == 2.5  # latencies 1, 2, 3, 4
    assert summary['p99_s'] == pytest.approx(3.97)  # rank 2.97: 3 + 0.97 x (4 - 3)


def test_quick_shortens_only_what_no_flag_sets():
    opts = bench_server.options(given(quick=True, max_tokens=16))
    assert opts.concurrency == [1, 4] and opts.requests == 8 and opts.memory_requests == 200
    assert opts.max_tokens == 16
    assert bench_server.options(given(concurrency=8)).concurrency == [8]  # fire reads --concurrency=8 as an int
    assert bench_server.options(given()).concurrency == [1, 4, 16]


@pytest.mark.parametrize('flag, value', [('concurrency', (1, 0)), ('memory_requests', 99), ('temperature', 2.5),
                                         ('temperature', True), ('ttft_timeout', 0), ('max_batch_size', 'abc')])
def test_an_option_out_of_range_is_refused_by_name(flag, value):
    with pytest.raises(flags.UsageError, match=f'--{flag} '):
        bench_server.options(given(**{flag: value}))


def test_a_bad_flag_ends_the_benchmark_with_one_error_line():
    done = subprocess.run([sys.executable, str(support.REPO / 'bench' / 'bench_server.py'), '--requests=0'],
                          capture_output=True, text=True, timeout=120)
    done.err = done.stderr
    support.assert_clean_error(done, '--requests')
    assert done.stdout == ''
