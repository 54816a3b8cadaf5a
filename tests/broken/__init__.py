"""Broken GPT-2s: adapters with one realistic bug each, naming the requirements they must fail."""
