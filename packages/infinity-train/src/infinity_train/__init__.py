"""infinity_train."""
