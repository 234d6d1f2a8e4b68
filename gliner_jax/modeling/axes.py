"""Every logical axis name a parameter or activation may carry, in one place.

Model code names each parameter dimension with one of these (`layers.logical_axes`); `sharding.py` maps
them to mesh axes. A name outside this list is refused when the parameter is built, so a misspelt axis cannot be
silently replicated.
"""

from __future__ import annotations

BATCH = "batch"  # rows of a batch (activations only)
LABELS = "labels"  # rows of a bi-encoder's label table: the labels its label encoder reads (activations only)
VOCAB = "vocab"  # rows of a word-embedding table
EMBED = "embed"  # the encoder's model width
HIDDEN = "hidden"  # GLiNER's head width (`hidden_size`) where it differs from the encoder's
HEADS = "heads"  # attention heads x head dim
MLP = "mlp"  # feed-forward / head expansion width
POSITIONS = "positions"  # absolute position embeddings
RELPOS = "relpos"  # relative position embeddings
TYPES = "types"  # token type embeddings
LAYERS = "layers"  # the stacked encoder layers
LSTM = "lstm"  # an LSTM's four gate blocks
LSTM_HIDDEN = "lstm_hidden"  # an LSTM's recurrent input

ALL_AXES = (BATCH, LABELS, VOCAB, EMBED, HIDDEN, HEADS, MLP, POSITIONS, RELPOS, TYPES, LAYERS, LSTM, LSTM_HIDDEN)
