"""Optuna studies over the paper's ablation axes (not landed yet; see the README's status table)."""
