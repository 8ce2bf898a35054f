"""Research projects built on the shared DETR core (detrex-style): one package per paper."""
