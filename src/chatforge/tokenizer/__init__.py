"""Tokenizers: training (`train`), chat templates (`templates`) and loading for training stages (`load`).

Import the submodules directly; this package imports nothing so that `chatforge --help` stays fast.
"""
