"""KFP definitions: thin components over the core, and the compile step.

This is the only area that imports kfp.
"""
