"""Weight-name conversion between the zoo and other layouts (official releases, transformers)."""
