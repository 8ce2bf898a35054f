"""CenterNetLite: a small, fast CenterNet-style detector used to check the engine and evaluator end to end."""
