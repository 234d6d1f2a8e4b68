"""Text on its way to the model: labels, words and their subword pieces, the device wire format, collation."""
