"""The model: embedding, recurrent stack, output heads, regularizers, one-step sampling forms."""
