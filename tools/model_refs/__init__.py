"""The parts of tools/gen_model_refs.py (run that script)."""
