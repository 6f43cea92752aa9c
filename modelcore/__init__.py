"""What training and serving share, so neither imports the other: the model repository's manifest format,
the tokenizers, autoregressive decoding (beam search, sampling, the continuous-batching scheduler) and the
adapters that step the translation and text-generation graphs."""
