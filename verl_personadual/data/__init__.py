"""Layer 2, data: source loaders (UltraMedical, FLAN, AlignX, PersonaHub), personas, overlap filters, the RL /
SFT row pipelines, benchmark specs and loaders, eval sets, task families, the toy task, the shipped samples
and their recorded replies, input checks. Imports core and utils only.
"""
