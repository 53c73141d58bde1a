"""Numbers the atlas's steps share, each said once."""

#: Rows per contiguous block when rows are subsampled or bootstrapped, so that the
#: tokens of one window stay together (the moving-block bootstrap of Kuensch 1989).
BLOCK_ROWS = 256

#: Fewest rows an atlas is computed from (as few as training takes): one row has no
#: correlations, and a handful gives neither co-firing tests nor resamples.
MIN_ROWS = 16

#: Spread of a null's draws, relative to the figures' size, at or below which the draws
#: count as all equal (rounding): such a null has no z (:mod:`.inference.draws`).
MIN_STD = 1e-6

#: Hennig 2007, Section 4: clusters are "valid, stable" from a mean best-match
#: Jaccard of 0.75 and "dissolved" at or below 0.5.
STABLE_JACCARD = 0.75
DISSOLVED_JACCARD = 0.5

#: What a module of the atlas is, in words (written into every atlas).
MODULE_KIND = "co-activation: units driven by features that fire together (not a causal claim)"
