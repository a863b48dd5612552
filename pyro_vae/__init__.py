"""pyro-vae: benchmarks and tools for studying when variational autoencoders fail."""

__version__ = "0.1.0"
