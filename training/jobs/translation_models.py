"""Keras layers for the two English->German models, written so the same weights serve two graphs:

* training: teacher forcing over whole target sequences (causal masking for the Transformer);
* serving: an encoder graph and a decoder **step** graph with explicit state, so the server can run greedy and
  beam search with many sequences (and beams) as rows of one batch.

Rows of one step batch may sit at different positions: memory and the self-attention cache are padded on
the right to a common length and masked (``memory_mask``, ``cache_mask``: 1 = real, 0 = padding).
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

NEG = -1e9


# ------------------------------------------------------------------------------------------ attention
class MultiHeadAttention(layers.Layer):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, **kw):
        super().__init__(**kw)
        self.d, self.h, self.dh = d_model, heads, d_model // heads
        self.q, self.k = layers.Dense(d_model, name="q"), layers.Dense(d_model, name="k")
        self.v, self.o = layers.Dense(d_model, name="v"), layers.Dense(d_model, name="o")
        self.drop = layers.Dropout(dropout)

    def split(self, x):  # [N, T, D] -> [N, H, T, dh]
        n, t = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (n, t, self.h, self.dh)), (0, 2, 1, 3))

    def attend(self, q_in, k, v, mask, training=False):
        """q_in [N,Tq,D] (not yet projected); k, v already projected [N,Tk,D]; mask [N,Tq|1,Tk] 1=keep."""
        q = self.split(self.q(q_in))
        kh, vh = self.split(k), self.split(v)
        scores = ops.matmul(q, ops.transpose(kh, (0, 1, 3, 2))) / math.sqrt(self.dh)
        scores = scores + (1.0 - ops.expand_dims(mask, 1)) * NEG
        w = self.drop(ops.softmax(scores, axis=-1), training=training)
        out = ops.transpose(ops.matmul(w, vh), (0, 2, 1, 3))
        n, t = ops.shape(out)[0], ops.shape(out)[1]
        return self.o(ops.reshape(out, (n, t, self.d)))

    def call(self, q_in, kv_in, mask, training=False):
        return self.attend(q_in, self.k(kv_in), self.v(kv_in), mask, training)


class FeedForward(layers.Layer):
    def __init__(self, d_model: int, d_ff: int, dropout: float, **kw):
        super().__init__(**kw)
        self.a, self.b = layers.Dense(d_ff, activation="relu"), layers.Dense(d_model)
        self.drop = layers.Dropout(dropout)

    def call(self, x, training=False):
        return self.b(self.drop(self.a(x), training=training))


class EncoderLayer(layers.Layer):
    def __init__(self, d, heads, d_ff, dropout, **kw):
        super().__init__(**kw)
        self.ln1, self.ln2 = layers.LayerNormalization(epsilon=1e-6), layers.LayerNormalization(epsilon=1e-6)
        self.att, self.ff = MultiHeadAttention(d, heads, dropout), FeedForward(d, d_ff, dropout)
        self.drop = layers.Dropout(dropout)

    def call(self, x, mask, training=False):  # mask [N,1,S]
        y = self.ln1(x)
        x = x + self.drop(self.att(y, y, mask, training=training), training=training)
        return x + self.drop(self.ff(self.ln2(x), training=training), training=training)


class DecoderLayer(layers.Layer):
    def __init__(self, d, heads, d_ff, dropout, **kw):
        super().__init__(**kw)
        self.ln1, self.ln2, self.ln3 = (layers.LayerNormalization(epsilon=1e-6) for _ in range(3))
        self.self_att, self.cross = MultiHeadAttention(d, heads, dropout), MultiHeadAttention(d, heads, dropout)
        self.ff = FeedForward(d, d_ff, dropout)
        self.drop = layers.Dropout(dropout)

    def call(self, x, memory, self_mask, mem_mask, training=False):
        y = self.ln1(x)
        x = x + self.drop(self.self_att(y, y, self_mask, training=training), training=training)
        x = x + self.drop(self.cross(self.ln2(x), memory, mem_mask, training=training), training=training)
        return x + self.drop(self.ff(self.ln3(x), training=training), training=training)

    def step(self, x, memory, mem_mask, cache_k, cache_v, cache_mask):
        """One position: x [N,1,D]; caches [N,T,D] of projected keys/values -> (out, k [N,T+1,D], v)."""
        y = self.ln1(x)
        k = ops.concatenate([cache_k, self.self_att.k(y)], axis=1)
        v = ops.concatenate([cache_v, self.self_att.v(y)], axis=1)
        mask = ops.concatenate([cache_mask, ops.ones_like(y[:, :, 0])], axis=1)[:, None, :]
        x = x + self.self_att.attend(y, k, v, mask)
        x = x + self.cross(self.ln2(x), memory, mem_mask[:, None, :])
        return x + self.ff(self.ln3(x)), k, v


class Transformer(keras.Model):
    """Pre-LN encoder-decoder Transformer over one shared subword vocabulary: the source embedding, the target
    embedding and the output layer are one matrix (fewer parameters, and both languages share pieces)."""

    def __init__(self, vocab, d=256, heads=4, d_ff=1024, layers_n=3, max_len=64, dropout=0.1, **kw):
        super().__init__(**kw)
        self.d, self.layers_n, self.max_len = d, layers_n, max_len
        self.emb = layers.Embedding(vocab, d, embeddings_initializer=keras.initializers.RandomNormal(0, d ** -0.5))
        self.src_pos, self.tgt_pos = layers.Embedding(max_len, d), layers.Embedding(max_len, d)
        self.enc = [EncoderLayer(d, heads, d_ff, dropout, name=f"enc{i}") for i in range(layers_n)]
        self.dec = [DecoderLayer(d, heads, d_ff, dropout, name=f"dec{i}") for i in range(layers_n)]
        self.enc_ln, self.dec_ln = layers.LayerNormalization(epsilon=1e-6), layers.LayerNormalization(epsilon=1e-6)
        self.drop = layers.Dropout(dropout)

    def head(self, x):
        return ops.matmul(x, ops.transpose(self.emb.embeddings))

    def encode(self, src, training=False):
        mask = ops.cast(ops.not_equal(src, 0), "float32")
        pos = ops.arange(ops.shape(src)[1])
        x = self.emb(src) * math.sqrt(self.d) + self.src_pos(pos)[None]
        x = self.drop(x, training=training)
        for layer in self.enc:
            x = layer(x, mask[:, None, :], training=training)
        return self.enc_ln(x), mask

    def call(self, inputs, training=False):
        src, tgt = inputs
        memory, mem_mask = self.encode(src, training)
        t = ops.shape(tgt)[1]
        causal = ops.cast(ops.tril(ops.ones((t, t))), "float32")
        tmask = ops.cast(ops.not_equal(tgt, 0), "float32")
        self_mask = causal[None] * tmask[:, None, :]
        x = self.emb(tgt) * math.sqrt(self.d) + self.tgt_pos(ops.arange(t))[None]
        x = self.drop(x, training=training)
        for layer in self.dec:
            x = layer(x, memory, self_mask, mem_mask[:, None, :], training=training)
        return self.head(self.dec_ln(x))

    def decode_step(self, token, position, memory, mem_mask, caches, cache_mask):
        x = self.emb(token[:, None]) * math.sqrt(self.d) + self.tgt_pos(position[:, None])
        new = []
        for layer, (ck, cv) in zip(self.dec, caches, strict=False):
            x, k, v = layer.step(x, memory, mem_mask, ck, cv, cache_mask)
            new += [k, v]
        return self.head(self.dec_ln(x))[:, 0], new


# ------------------------------------------------------------------------------------------ seq2seq
class Seq2Seq(keras.Model):
    """Bidirectional LSTM encoder, LSTM decoder with Luong (general) attention, one shared vocabulary.

    The encoder's two directions are projected to the decoder's width, so the step graph keeps one memory
    width and one (h, c) state."""

    def __init__(self, vocab, emb=128, units=256, dropout=0.2, **kw):
        super().__init__(**kw)
        self.units = units
        self.emb = layers.Embedding(vocab, emb)
        self.encoder = layers.Bidirectional(layers.LSTM(units, return_sequences=True, return_state=True))
        self.mem_proj = layers.Dense(units, name="mem_proj")
        self.h_proj = layers.Dense(units, activation="tanh", name="h_proj")
        self.c_proj = layers.Dense(units, name="c_proj")
        self.decoder = layers.LSTM(units, return_sequences=True, return_state=True)
        self.att_w = layers.Dense(units, use_bias=False, name="att_w")
        self.combine = layers.Dense(units, activation="tanh", name="combine")
        self.head = layers.Dense(vocab, name="head")
        self.drop = layers.Dropout(dropout)

    def encode(self, src, training=False):
        mask = ops.cast(ops.not_equal(src, 0), "float32")
        seq, hf, cf, hb, cb = self.encoder(self.drop(self.emb(src), training=training),
                                           mask=ops.not_equal(src, 0), training=training)
        memory = self.mem_proj(seq) * mask[..., None]
        h = self.h_proj(ops.concatenate([hf, hb], axis=-1))
        c = self.c_proj(ops.concatenate([cf, cb], axis=-1))
        return memory, h, c, mask

    def attend(self, dec_out, memory, mask):  # dec_out [N,T,U], memory [N,S,U], mask [N,S]
        scores = ops.matmul(self.att_w(dec_out), ops.transpose(memory, (0, 2, 1)))
        scores = scores + (1.0 - mask[:, None, :]) * NEG
        ctx = ops.matmul(ops.softmax(scores, axis=-1), memory)
        return self.combine(ops.concatenate([dec_out, ctx], axis=-1))

    def call(self, inputs, training=False):
        src, tgt = inputs
        memory, h, c, mask = self.encode(src, training)
        out, _, _ = self.decoder(self.drop(self.emb(tgt), training=training), initial_state=[h, c],
                                 training=training)
        return self.head(self.drop(self.attend(out, memory, mask), training=training))

    def decode_step(self, token, h, c, memory, mask):
        out, (h2, c2) = self.decoder.cell(self.emb(token), [h, c])
        return self.head(self.attend(out[:, None, :], memory, mask))[:, 0], h2, c2


# ------------------------------------------------------------------------------------------ export wrappers
class _Call(layers.Layer):
    """Wrap a method of a trained model as a layer, so a functional graph with named inputs/outputs uses the
    trained weights (the model is tracked, not copied)."""

    def __init__(self, model, fn, **kw):
        super().__init__(**kw)
        self.model, self.fn = model, fn

    def call(self, inputs):
        return self.fn(self.model, inputs)


def transformer_graphs(m: Transformer):
    src = keras.Input((None,), dtype="int64", name="src")
    memory, mask = _Call(m, lambda mm, s: mm.encode(s))(src)
    encoder = keras.Model(src, [layers.Identity(name="memory")(memory), layers.Identity(name="memory_mask")(mask)])

    tok = keras.Input((), dtype="int64", name="token")
    pos = keras.Input((), dtype="int64", name="position")
    mem = keras.Input((None, m.d), name="memory")
    mmask = keras.Input((None,), name="memory_mask")
    cmask = keras.Input((None,), name="cache_mask")
    caches = [keras.Input((None, m.d), name=f"cache_{kind}{i}") for i in range(m.layers_n) for kind in "kv"]

    def fn(mm, xs):
        t, p, me, mk, cm, *cs = xs
        logits, new = mm.decode_step(t, p, me, mk, list(zip(cs[0::2], cs[1::2], strict=False)), cm)
        return [ops.log_softmax(logits, axis=-1)] + new
    outs = _Call(m, fn)([tok, pos, mem, mmask, cmask, *caches])
    names = ["logprobs"] + [f"new_cache_{kind}{i}" for i in range(m.layers_n) for kind in "kv"]
    decoder = keras.Model([tok, pos, mem, mmask, cmask, *caches],
                          [layers.Identity(name=n)(o) for n, o in zip(names, outs, strict=False)])
    return encoder, decoder


def seq2seq_graphs(m: Seq2Seq):
    src = keras.Input((None,), dtype="int64", name="src")
    memory, h, c, mask = _Call(m, lambda mm, s: mm.encode(s))(src)
    encoder = keras.Model(src, [layers.Identity(name=n)(o) for n, o in
                                zip(["memory", "h", "c", "memory_mask"], [memory, h, c, mask], strict=False)])
    tok = keras.Input((), dtype="int64", name="token")
    hi, ci = keras.Input((m.units,), name="h"), keras.Input((m.units,), name="c")
    mem, mmask = keras.Input((None, m.units), name="memory"), keras.Input((None,), name="memory_mask")

    def fn(mm, xs):
        t, h_, c_, me, mk = xs
        logits, h2, c2 = mm.decode_step(t, h_, c_, me, mk)
        return [ops.log_softmax(logits, axis=-1), h2, c2]
    outs = _Call(m, fn)([tok, hi, ci, mem, mmask])
    decoder = keras.Model([tok, hi, ci, mem, mmask],
                          [layers.Identity(name=n)(o)
                           for n, o in zip(["logprobs", "h_out", "c_out"], outs, strict=True)])
    return encoder, decoder
