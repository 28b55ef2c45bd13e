"""Transforms: standardise, validate, merge, eligibility and exchange-file building."""
