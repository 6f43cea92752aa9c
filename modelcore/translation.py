"""Translation over exported encoder + decoder-step graphs: tokenization, batched encoding, and the two
step adapters (seq2seq LSTM state, Transformer key/value cache) that the decoding scheduler drives.

Used by the translation service and by the training job's BLEU evaluation, so both decode identically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modelcore.decoding_jobs import BeamSearchJob
from modelcore.scheduler import Scheduler
from modelcore.steps import Row, StepAdapter, pad_stack
from modelcore.text import SubwordTokenizer

NO_REPEAT_NGRAM = 3  # no output repeats a 3-gram of pieces (nor a piece three times in a row)


class TranslationModel(StepAdapter):
    """One exported translation model: ``kind`` is ``transformer`` or ``seq2seq``."""

    def __init__(self, manifest: dict, version_dir: Path, encoder_sess, decoder_sess):
        pre = manifest["preprocessing"]
        self.kind = pre["architecture"]
        # one SentencePiece model for both languages, shipped in the version folder
        self.src_vocab = self.tgt_vocab = SubwordTokenizer(Path(version_dir) / pre["sentencepiece_model"])
        self.max_source = int(pre["max_source_tokens"])
        self.max_target = int(pre["max_target_tokens"])
        if "max_positions" in pre:  # a learned position table: step t reads position t, so no step may pass it
            self.max_target = min(self.max_target, int(pre["max_positions"]) - 1)
        self.enc, self.dec = encoder_sess, decoder_sess
        enc_names = [o.name for o in encoder_sess.get_outputs()]
        # the service swaps in a dynamic batcher here; evaluation calls the session directly
        self.encoder_run = lambda feeds: dict(zip(enc_names, encoder_sess.run(enc_names, feeds), strict=False))
        self.cache_names = [i.name for i in decoder_sess.get_inputs() if i.name.startswith("cache_")
                            and i.name != "cache_mask"]
        dec_inputs = {i.name: i for i in decoder_sess.get_inputs()}
        self.width = dec_inputs["memory"].shape[-1]
        self.banned = (self.tgt_vocab.pad_id, self.tgt_vocab.unk_id, self.tgt_vocab.bos_id)

    # ------------------------------------------------------------------ text <-> ids
    def source_ids(self, text: str) -> list[int]:
        return self.src_vocab.encode(text)[: self.max_source] or [self.src_vocab.unk_id]

    def target_text(self, ids: list[int]) -> str:
        return self.tgt_vocab.decode(ids)

    # ------------------------------------------------------------------ encoder
    def encode(self, sources: list[list[int]]) -> list[dict]:
        """Run the encoder over a batch; return per-source contexts (memory trimmed to its real length)."""
        src, _ = pad_stack([np.array(s, dtype=np.int64) for s in sources])
        out = self.encoder_run({"src": src})
        ctx = []
        for i, s in enumerate(sources):
            c = {"memory": out["memory"][i, : len(s)]}
            if self.kind == "seq2seq":
                c["h"], c["c"] = out["h"][i], out["c"][i]
            ctx.append(c)
        return ctx

    def first_row(self, context: dict) -> Row:
        state: tuple
        if self.kind == "seq2seq":
            state = (context["h"], context["c"])
        else:
            empty = np.zeros((0, self.width), np.float32)
            state = tuple(empty for _ in self.cache_names)
        return Row(state=state, token=self.tgt_vocab.bos_id, position=0, context=context)

    # ------------------------------------------------------------------ one decoding step for many rows
    def step(self, rows: list[Row]):
        token = np.array([r.token for r in rows], dtype=np.int64)
        memory, mmask = pad_stack([r.context["memory"] for r in rows])
        if self.kind == "seq2seq":
            h = np.stack([r.state[0] for r in rows])
            c = np.stack([r.state[1] for r in rows])
            lp, h2, c2 = self.dec.run(["logprobs", "h_out", "c_out"],
                                      {"token": token, "h": h, "c": c, "memory": memory, "memory_mask": mmask})
            return lp, [(h2[i], c2[i]) for i in range(len(rows))]
        lengths = [r.state[0].shape[0] for r in rows]
        feeds = {"token": token, "position": np.array([r.position for r in rows], dtype=np.int64),
                 "memory": memory, "memory_mask": mmask}
        for j, name in enumerate(self.cache_names):
            feeds[name], cmask = pad_stack([r.state[j] for r in rows])
        feeds["cache_mask"] = cmask
        outs = self.dec.run(["logprobs"] + ["new_" + n for n in self.cache_names], feeds)
        lp, new = outs[0], outs[1:]
        states = []
        for i, t in enumerate(lengths):  # real cache entries: the first t, then the one just appended
            states.append(tuple(np.concatenate([c[i, :t], c[i, -1:]]) for c in new))
        return lp, states

    # ------------------------------------------------------------------ convenience
    def job(self, context: dict, beam_size: int, max_len: int) -> BeamSearchJob:
        """Greedy or beam search; an output may be at most twice its source plus ten tokens long."""
        limit = min(max_len, self.max_target, 2 * len(context["memory"]) + 10)
        return BeamSearchJob(self, self.first_row(context), beam_size, limit, self.tgt_vocab.eos_id,
                             banned=self.banned, no_repeat_ngram=NO_REPEAT_NGRAM)


def translate_batch(model: TranslationModel, texts: list[str], beam_size: int = 1, max_len: int | None = None,
                    chunk: int = 64) -> list[str]:
    """Synchronous batched translation (for evaluation): all sentences decoded together, chunk by chunk."""
    out: list[str] = []
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        contexts = model.encode([model.source_ids(t) for t in part])
        jobs = [model.job(c, beam_size, max_len or model.max_target) for c in contexts]
        Scheduler(max_rows=chunk * beam_size).run_until_done(jobs)
        failed = next((j.error for j in jobs if j.error is not None), None)
        if failed is not None:  # never score a failed decode as an empty translation
            raise RuntimeError(f"decoding failed: {failed}") from failed
        out.extend(model.target_text(j.results()[0].tokens) if j.results() else "" for j in jobs)
    return out
