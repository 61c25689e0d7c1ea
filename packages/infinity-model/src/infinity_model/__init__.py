"""infinity_model."""
