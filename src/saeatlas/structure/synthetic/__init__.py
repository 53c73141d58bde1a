"""Activations with planted modules (and their no-structure twins), and the
validation that runs the atlas on them."""
