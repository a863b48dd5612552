"""Pyro guides (variational families) for the models of :mod:`pyro_vae.models`."""
