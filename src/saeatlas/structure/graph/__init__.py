"""From SAE codes to modules: encoding a store, feature co-occurrence and its pair
tests, the community finders, and the projection of feature modules onto units."""
