"""What the modules are: profiles and top examples, layer spans and flows, the
geometry of the dictionary, and the atlas's tables."""
