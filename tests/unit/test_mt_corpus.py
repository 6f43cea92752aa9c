"""The translation corpus's filters and split, and decoding's repeat blocking, on small hand-made inputs."""
from __future__ import annotations

import numpy as np

from modelcore.decoding_jobs import BeamSearchJob, repeating_tokens
from modelcore.steps import Row, StepAdapter
from training import mt_corpus


def test_filter_drops_placeholders_markup_and_fragments():
    keep = mt_corpus.keep_pair
    assert keep("Where is the station?", "Wo ist der Bahnhof?")
    assert not keep("Could not open %s for reading.", "%s konnte nicht geöffnet werden.")
    assert not keep("Copy %1 files now.", "Jetzt %1 Dateien kopieren.")
    assert not keep("Open the <b>file</b> now.", "Die <b>Datei</b> jetzt öffnen.")
    assert not keep("Save", "Speichern")  # under three words a side
    assert not keep("Same text in both.", "Same text in both.")
    assert not keep("A short one here.", "Ein sehr viel zu langer deutscher Satz, der nicht zu dem kurzen englischen "
                                         "Satz passt und viel länger ist.")


def test_split_keeps_an_origin_whole_and_no_near_duplicate_crosses(monkeypatch):
    monkeypatch.setattr(mt_corpus, "TEST_SIZES", {"everyday": 4, "software": 2, "packages": 2})
    monkeypatch.setattr(mt_corpus, "VALIDATION_SIZES", {"everyday": 2, "software": 2, "packages": 2})
    by_origin = {}
    for i in range(40):
        origin = f"ding:{i}"
        by_origin[origin] = [(f"Sentence number {i} is here.", f"Satz Nummer {i} ist hier.", "everyday", origin),
                             (f"Sentence number {i} is here!", f"Satz Nummer {i} ist da!", "everyday", origin)]
    splits = mt_corpus._split(by_origin)
    origins = {name: {r[3] for r in rows} for name, rows in splits.items()}
    assert not origins["train"] & origins["test"] and not origins["train"] & origins["validation"]
    held = {mt_corpus.dedup_key(r[0]) for name in ("test", "validation") for r in splits[name]}
    assert not any(mt_corpus.dedup_key(r[0]) in held for r in splits["train"])
    assert len({r[0] for r in splits["test"]}) == len(splits["test"])  # one reference per English sentence


def test_repeats_are_blocked():
    assert repeating_tokens([5, 5], 3) == [5]  # a third 5 in a row
    assert repeating_tokens([6, 7, 8, 6, 7], 3) == [8]  # "6 7" was followed by 8 once
    assert repeating_tokens([1, 2, 3, 1, 2], 3) == [3]  # 1 2 3 again


class _Loop(StepAdapter):
    """A step that always prefers token 4, then 5: left alone, greedy decoding loops 4 5 4 5 ..."""

    def step(self, rows):
        lp = np.full((len(rows), 8), -9.0)
        for i, r in enumerate(rows):
            lp[i, 4 if r.token != 4 else 5] = -0.1
            lp[i, 6] = -1.0
            lp[i, 3] = -5.0
        return lp, [None] * len(rows)


def test_greedy_and_beam_never_repeat_a_trigram():
    from modelcore.scheduler import Scheduler
    for beam in (1, 3):
        job = BeamSearchJob(_Loop(), Row(None, 2, 0), beam, 20, 3, banned=(0, 1, 2), no_repeat_ngram=3)
        Scheduler(max_rows=8).run_until_done([job])
        toks = job.results()[0].tokens
        grams = [tuple(toks[i:i + 3]) for i in range(len(toks) - 2)]
        assert len(grams) == len(set(grams)), toks
