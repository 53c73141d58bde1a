"""How sure the atlas is: null models, the significance test, stability across
row resamples and SAE seeds (with dictionary matching), and the random-SAE control."""
