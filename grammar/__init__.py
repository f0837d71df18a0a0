"""Lark grammars of the prompt dialects (shipped as ``promptweights.grammar``)."""
