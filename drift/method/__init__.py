"""The DRIFT method: its three components and the GRPO objective they modify.

``subset`` (1: reward-concentrated update subset), ``prompt_noise`` (2: annealed prompt-embedding
noise), ``shaping`` (3: potential-based diversity shaping), ``advantages`` (the per-step
advantages built from 1 and 3), ``grpo`` (the clipped policy loss and the KL penalty).
"""
