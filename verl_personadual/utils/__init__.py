"""Layer 0, utils: atomic writes and JSON manifests, the OpenAI-compatible LLM client, error convention, weight
fingerprints, text helpers. Imports nothing else of the project.
"""
