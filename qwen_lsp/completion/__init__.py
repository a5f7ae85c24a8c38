"""Code completion: what the model sees (layout), the cache, the generation in flight, and clean-up of the answer."""
