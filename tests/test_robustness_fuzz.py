"""Fuzz test (issue 12, item 6): 100 seeded cases over the .npz reader and the run-folder loaders
(config.json, metrics.jsonl, weights and training state, checksums.json, classifier cache). Every case
ends with exit 0 or 2, never a traceback, and writes nothing outside its run folder (the working
directory, $HOME and $MMVAE_DATA point into the temporary tree that is compared before and after)."""
from __future__ import annotations

import collections

from fuzz_run_folders import KINDS, make_base, make_cases, run_case


def test_fuzz_run_folders_and_npz(tmp_path):
    base = make_base(tmp_path)
    cases = make_cases(seed=0)
    assert len(cases) == sum(KINDS.values()) == 100
    counts = collections.Counter()
    for case in cases:
        out = run_case(case, tmp_path, base)
        assert not out.error, f"case {case.index} ({case.what}; {case.argv}):\n{out.error}"
        assert out.code in (0, 2), f"case {case.index} ({case.what}; {case.argv}): exit {out.code}"
        assert not out.changed_outside, f"case {case.index} ({case.what}) changed {out.changed_outside}"
        assert out.code == 0 or out.one_line, f"case {case.index} ({case.what}): {out.stderr}"
        counts[(case.kind, out.code)] += 1
    # both outcomes occur, so the cases reach past the first check
    assert sum(v for (k, c), v in counts.items() if c == 0) > 10, counts
    assert sum(v for (k, c), v in counts.items() if c == 2) > 10, counts
